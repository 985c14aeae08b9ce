// One JSON Lines example (data/jsonl_examples.h) in each format: the first byte picks
// text, alpaca, chat, sharegpt or the guessed format; the rest is the line. A parsed
// conversation is then rendered with ChatML, as prepare does.
#include "data/chat_template.h"
#include "data/jsonl_examples.h"
#include "fuzz_input.h"

using namespace temper;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const std::string_view line(reinterpret_cast<const char*>(data) + 1, size - 1);
  const JsonlFormat formats[] = {JsonlFormat::Text, JsonlFormat::Alpaca, JsonlFormat::Chat,
                                 JsonlFormat::ShareGPT};
  // Errors here say what is wrong with the line; prepare prefixes them with "file:line: "
  // (tests/unit/test_prepare.cpp), so no source name is required of them ("").
  JsonlFormat format = formats[data[0] % 4];
  if (data[0] >= 128 && !fuzz::parses("", [&] { format = guess_jsonl_format(line); })) return 0;
  Example example;
  if (!fuzz::parses("", [&] { example = parse_example(line, format); })) return 0;
  if (!example.messages.empty())
    fuzz::parses("message", [&] {
      render_chat_spans(chat_template_by_name("chatml"), example.messages, false);
    });
  return 0;
}
