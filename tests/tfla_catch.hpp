// Catch2 for every tfla test, version 2 or 3: tests include this header, never a Catch2 header.
// Catch2 2 (Debian 12, Ubuntu 22.04) is the single header <catch2/catch.hpp>; Catch2 3 (Debian
// 13, Ubuntu 24.04) is split into headers (all of them: <catch2/catch_all.hpp>) and a compiled
// library, and renamed the two things the tests use from Catch2 2: Approx (now Catch::Approx)
// and the substring matcher Catch::Contains (now Catch::Matchers::ContainsSubstring). Below,
// Catch2 2's names work with both. tests/CMakeLists.txt defines TFLA_CATCH2_MAJOR.
#pragma once

#if defined(TFLA_CATCH2_MAJOR) && TFLA_CATCH2_MAJOR >= 3
#include <catch2/catch_all.hpp>
#include <string>

using Catch::Approx;

namespace Catch {
inline Matchers::StringContainsMatcher Contains(const std::string& text,
                                                CaseSensitive cs = CaseSensitive::Yes) {
  return Matchers::ContainsSubstring(text, cs);
}
}  // namespace Catch
#else
#include <catch2/catch.hpp>
#endif
