// What the CLI prints on stdout: human-readable text, or with --json exactly one JSON document
// (the command's result, or an error object when it fails). Notes that a command must report
// (a damaged cache moved aside, a read-only cache) go to stdout as "note: ..." lines, or into
// the JSON document's "notes" array.
#pragma once
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace tfla::cli {

struct OutputState {
  bool json = false;
  std::vector<std::string> notes;
};
inline OutputState& output_state() {
  static OutputState s;
  return s;
}

// --json was given: stdout carries one JSON document.
inline void set_json_output(bool on) { output_state().json = on; }
inline bool json_output() { return output_state().json; }

// Reports `text` to the user: now on stdout, or (with --json) in the document's "notes".
inline void note(const std::string& text) {
  if (json_output())
    output_state().notes.push_back(text);
  else
    std::printf("note: %s\n", text.c_str());
}

// JSON text of `j`; invalid UTF-8 in a string (e.g. a name read from a foreign file) is
// replaced by U+FFFD rather than throwing.
inline std::string json_text(const nlohmann::json& j, int indent = 2) {
  return j.dump(indent, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Prints `j` (an object gets the notes so far under "notes") as the command's JSON result.
inline void print_json(nlohmann::json j) {
  if (j.is_object() && !output_state().notes.empty()) j["notes"] = output_state().notes;
  std::printf("%s\n", json_text(j).c_str());
}

}  // namespace tfla::cli
