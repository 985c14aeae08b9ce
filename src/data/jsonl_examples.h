// Training examples from JSON Lines, one JSON object a line, in one of four formats:
//
//   text      {"text": "..."}                                      all tokens trained
//   alpaca    {"instruction": "...", "input": "..." (optional), "output": "..."}
//             -> user = instruction (+ "\n\n" + input when not empty), assistant = output
//   chat      {"messages": [{"role": "system|user|assistant", "content": "..."}, ...]}
//   sharegpt  {"conversations": [{"from": "system|human|gpt", "value": "..."}, ...]}
//
// Other keys are ignored. A bad line (invalid JSON, a missing or wrongly typed field, an
// unknown role, an empty conversation or one without an assistant turn) is a temper::Error
// whose message gives the reason; the caller adds file:line.
#pragma once
#include <string>
#include <string_view>
#include <vector>

#include "data/chat_template.h"

namespace temper {

enum class JsonlFormat { Text, Alpaca, Chat, ShareGPT };

// "text", "alpaca", "chat", "sharegpt"; anything else is an error listing them.
JsonlFormat jsonl_format_from_name(std::string_view name);
const char* jsonl_format_name(JsonlFormat f);

// The format a line is in, from its keys (text, instruction, messages, conversations).
JsonlFormat guess_jsonl_format(std::string_view line);

struct Example {
  std::string text;                   // the text format
  std::vector<ChatMessage> messages;  // alpaca, chat, sharegpt
};

Example parse_example(std::string_view line, JsonlFormat format);

}  // namespace temper
