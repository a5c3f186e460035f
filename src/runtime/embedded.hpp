// The kernel templates embedded at build time (kernel_templates/tfla/*.cuh).
#pragma once
#include <cstddef>

namespace tfla::rt {

struct EmbeddedFile {
  const char* name;  // include name, e.g. "tfla/tile.cuh"
  const char* text;
};
extern const EmbeddedFile kEmbeddedTemplates[];
extern const size_t kNumEmbeddedTemplates;
extern const char* const kTemplatesHash;  // hash of every template's text

}  // namespace tfla::rt
