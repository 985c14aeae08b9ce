// Chat templates: names, detection errors, bad conversations and spans. The renderings
// themselves are checked against transformers in reference/test_chat_template_reference.cpp.
#include <gtest/gtest.h>

#include "core/error.h"
#include "data/chat_template.h"
#include "support/test_util.h"

namespace temper {
namespace {

using test::error_of;

TEST(ChatTemplate, EveryNameRendersAndUnknownNamesListTheKnownOnes) {
  const std::vector<ChatMessage> conv = {{"user", "Hi"}, {"assistant", "Hello"}};
  for (const char* name : {"chatml", "smollm2", "qwen2", "qwen2.5", "llama3", "llama3.1", "llama2",
                           "mistral", "mistral-nemo", "mistral-v1", "gemma", "gemma3"}) {
    ChatTemplate t = chat_template_by_name(name);
    EXPECT_EQ(t.name, name);
    const std::string text = render_chat(t, conv, false);
    const size_t answer = text.find("Hello");
    ASSERT_NE(answer, std::string::npos) << name << ": " << text;
    EXPECT_NE(text.find(end_of_turn_text(t), answer), std::string::npos) << name << ": " << text;
  }
  const std::string e = error_of([] { chat_template_by_name("vicuna"); });
  EXPECT_NE(e.find("'vicuna'"), std::string::npos) << e;
  EXPECT_NE(e.find("llama3"), std::string::npos) << e;
}

TEST(ChatTemplate, UnknownOrMissingTemplatesNameTheSourceAndTheOption) {
  for (const char* text : {"", "{% for m in messages %}{{ m['content'] }}{% endfor %}",
                           "{{ '<|im_start|>' }}<think>{{ '<|im_end|>' }}",
                           "{{ ' [INST] ' + system_message + ' [/INST]' }}",
                           "{% set first_user_prefix = messages[0]['content'] + '\\n' %}"
                           "<start_of_turn><end_of_turn>"}) {
    const std::string e = error_of([&] { detect_chat_template(text, "models/x/tokenizer_config.json"); });
    EXPECT_NE(e.find("models/x/tokenizer_config.json"), std::string::npos) << e;
    EXPECT_NE(e.find("--chat-template NAME"), std::string::npos) << e;
  }
}

TEST(ChatTemplate, ChatMLDefaultSystemIsTheLiteralNotAnExpression) {
  // Qwen2.5 style: the first "<|im_start|>system" is followed by an expression, the default
  // comes later as a plain literal (with escaped quotes and newlines in JSON-escaped form).
  const std::string text =
      "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + "
      "messages[0]['content'] + '<|im_end|>\\n' }}{%- else %}{{- '<|im_start|>system\\nYou "
      "are Bob\\'s helper.<|im_end|>\\n' }}{%- endif %}";
  ChatTemplate t = detect_chat_template(text, "inline");
  EXPECT_EQ(t.format, ChatFormat::ChatML);
  EXPECT_EQ(t.default_system, "You are Bob's helper.");
  EXPECT_EQ(t.name, "chatml");
  // No default at all.
  EXPECT_EQ(detect_chat_template("{{ '<|im_start|>' + m['role'] + '\\n' }}", "x").default_system, "");
}

TEST(ChatTemplate, BadConversationsNameTheMessage) {
  const ChatTemplate chatml = chat_template_by_name("chatml");
  std::string e = error_of([&] {
    render_chat(chatml, std::vector<ChatMessage>{{"user", "a"}, {"tool", "b"}}, false);
  });
  EXPECT_NE(e.find("message 1: unknown role 'tool'"), std::string::npos) << e;
  e = error_of([&] { render_chat(chatml, std::vector<ChatMessage>{}, true); });
  EXPECT_NE(e.find("no messages"), std::string::npos) << e;
  e = error_of([&] { render_chat(chatml, std::vector<ChatMessage>{{"user", "bad \xff byte"}}, false); });
  EXPECT_NE(e.find("message 0: content is not valid UTF-8"), std::string::npos) << e;
  e = error_of([&] {
    render_chat(chat_template_by_name("llama2"),
                std::vector<ChatMessage>{{"system", "s"}, {"assistant", "a"}}, false);
  });
  EXPECT_NE(e.find("message 1: expected a user message, got 'assistant'"), std::string::npos) << e;
  e = error_of([&] {
    render_chat(chat_template_by_name("gemma"), std::vector<ChatMessage>{{"system", "s"}}, false);
  });
  EXPECT_NE(e.find("message 0: the gemma chat template has no system role"), std::string::npos) << e;
}

TEST(ChatTemplate, SpansMarkAssistantContentAndEndOfTurnOnly) {
  const std::vector<ChatMessage> conv = {
      {"system", "S"}, {"user", "U1"}, {"assistant", "A1"}, {"user", "U2"}, {"assistant", "A2"}};
  for (const char* name : {"chatml", "llama3.1", "llama2", "mistral", "gemma3"}) {
    ChatTemplate t = chat_template_by_name(name);
    auto spans = render_chat_spans(t, conv, false);
    std::string trained, rest, all;
    for (const auto& s : spans) (s.trainable ? trained : rest) += s.text, all += s.text;
    EXPECT_EQ(all, render_chat(t, conv, false)) << name;
    for (const char* a : {"A1", "A2"}) {
      EXPECT_NE(trained.find(a), std::string::npos) << name;
      EXPECT_EQ(rest.find(a), std::string::npos) << name;
    }
    for (const char* u : {"S", "U1", "U2"}) EXPECT_EQ(trained.find(u), std::string::npos) << name;
    // Both answers end with the end-of-turn marker, each inside a trainable span.
    int eot_spans = 0;
    for (const auto& s : spans)
      if (s.trainable && s.text.ends_with(end_of_turn_text(t))) ++eot_spans;
    EXPECT_EQ(eot_spans, 2) << name;
  }
}

}  // namespace
}  // namespace temper
