// The rules every stored row must follow, applied by import (a row that breaks one is not
// copied) and by verify (it is reported). Each check returns "" for a good row, else one
// sentence naming the field and the rule.
#pragma once

#include <string>
#include <string_view>

#include "tfla_cache/types.hpp"

namespace tfla::cache::detail {

// Whether `s` is well-formed UTF-8 (no overlong forms, surrogates or code points past
// U+10FFFF) without NUL bytes. Never throws.
bool is_utf8(std::string_view s) noexcept;

// "entry <env id prefix> <problem>" for messages, printable whatever the row holds.
std::string row_name(const char* kind, const std::string& env_id, const ProblemKey& p);

// Text fields UTF-8; the id is the one its key hashes to.
std::string check_env_row(const std::string& env_id, const EnvKey& env);
// The problem (ProblemKey::validate), the winner's names and kernel ranges
// (util::kConfigValueMin/Max), finite times (winner > 0, the rest >= 0), a timestamp >= 0,
// UTF-8 text.
std::string check_entry_row(const TunedEntry& e);
// `status_text` must name a status; the config as for entries; finite times >= 0; an error
// that is not negative (NaN and infinity stand for a wrong result); UTF-8 message.
std::string check_candidate_row(const CandidateResult& r, const std::string& status_text);
// The hash is 64 lowercase hex digits, the arch sm_/compute_<digits>[a-z], names UTF-8, the
// env id "" or 32 hex digits, the size and SHA-256 checksum those of the bytes.
std::string check_cubin_row(const std::string& hash, const std::string& arch,
                            const std::string& kernel_name, const std::string& env_id,
                            int64_t size_bytes, const std::string& checksum,
                            const std::string& bytes);

}  // namespace tfla::cache::detail
