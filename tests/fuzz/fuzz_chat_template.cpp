// Chat templates: detection from a Jinja text, then rendering a conversation with it.
// Input: the Jinja text, '\0', then messages as "role\x1fcontent" separated by '\x1e'.
// With no '\0' the first byte picks a named template and the rest are the messages.
#include <span>

#include "data/chat_template.h"
#include "fuzz_input.h"

using namespace temper;

namespace {
const char* const kNames[] = {"chatml", "smollm2", "qwen2",   "qwen2.5",      "llama3",
                              "llama3.1", "llama2", "mistral", "mistral-nemo", "mistral-v1",
                              "gemma",  "gemma3"};
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  ChatTemplate tmpl;
  std::string_view messages_text;
  if (in.find('\0') != std::string_view::npos) {
    const auto parts = fuzz::split_once(in, '\0');
    const std::string_view jinja = parts.first;
    messages_text = parts.second;
    if (!fuzz::parses("fuzz/chat_template.jinja",
                      [&] { tmpl = detect_chat_template(jinja, "fuzz/chat_template.jinja"); }))
      return 0;
  } else {
    tmpl = chat_template_by_name(kNames[uint8_t(in[0]) % std::size(kNames)]);
    messages_text = in.substr(1);
  }
  std::vector<ChatMessage> messages;
  for (const std::string& m : fuzz::split_all(messages_text, '\x1e')) {
    const auto [role, content] = fuzz::split_once(m, '\x1f');
    messages.push_back({std::string(role), std::string(content)});
  }
  // Errors name the message ("message 2: ..."); any message index will do.
  for (const bool prompt : {false, true}) {
    fuzz::parses("message", [&] { render_chat_spans(tmpl, messages, prompt); });
  }
  end_of_turn_text(tmpl);
  return 0;
}
