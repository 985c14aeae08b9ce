#include "data/chat_template.h"

#include "core/error.h"
#include "data/tokenizer.h"

namespace temper {
namespace {

constexpr const char* kNames = "chatml, smollm2, qwen2, qwen2.5, llama3, llama3.1, llama2, "
                               "mistral, mistral-nemo, mistral-v1, gemma, gemma3";

// Python's str.isspace (what Jinja's `trim` and str.strip() remove): Unicode White_Space
// plus the ASCII separators U+001C..U+001F.
bool py_isspace(uint32_t cp) {
  return (cp >= 0x1C && cp <= 0x1F) || tokenizer_detail::is_whitespace(cp);
}

// Python str.strip() on valid UTF-8.
std::string py_strip(std::string_view s) {
  size_t i = 0, begin = s.size(), end = 0;
  while (i < s.size()) {
    size_t at = i;
    if (!py_isspace(tokenizer_detail::utf8_next(s, i))) {
      if (begin == s.size()) begin = at;
      end = i;
    }
  }
  return begin < end ? std::string(s.substr(begin, end - begin)) : std::string();
}

// Collects spans, merging neighbours with the same flag.
struct SpanWriter {
  std::vector<ChatSpan> spans;
  void add(std::string_view text, bool trainable) {
    if (text.empty()) return;
    if (!spans.empty() && spans.back().trainable == trainable)
      spans.back().text += text;
    else
      spans.push_back({std::string(text), trainable});
  }
};

bool is_role(const ChatMessage& m, const char* role) { return m.role == role; }

void check_messages(const ChatTemplate& t, std::span<const ChatMessage> messages) {
  if (messages.empty()) fail("chat template {}: no messages", t.name);
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      fail("message {}: unknown role '{}' (expected system, user or assistant)", i, m.role);
    if (tokenizer_detail::utf8_invalid_offset(m.content) != std::string_view::npos)
      fail("message {}: content is not valid UTF-8", i);
  }
}

// Formats that need user/assistant turns to alternate, starting with a user turn, after an
// optional leading system message (which `allow_system` says the format accepts).
// Returns the index of the first turn after the system message.
size_t check_alternation(const ChatTemplate& t, std::span<const ChatMessage> messages,
                         bool allow_system) {
  size_t first = is_role(messages[0], "system") ? 1 : 0;
  if (first == 1 && !allow_system)
    fail("message 0: the {} chat template has no system role", t.name);
  for (size_t i = first; i < messages.size(); ++i) {
    const char* want = (i - first) % 2 == 0 ? "user" : "assistant";
    if (messages[i].role != want)
      fail("message {}: expected a {} message, got '{}' (the {} chat template needs user and "
           "assistant turns to alternate, after an optional first system message)",
           i, want, messages[i].role, t.name);
  }
  return first;
}

// <|im_start|>{role}\n{content}<|im_end|>\n, a default system message first when the
// conversation has none.
void render_chatml(const ChatTemplate& t, std::span<const ChatMessage> messages, SpanWriter& w) {
  if (!is_role(messages[0], "system") && !t.default_system.empty())
    w.add("<|im_start|>system\n" + t.default_system + "<|im_end|>\n", false);
  for (const ChatMessage& m : messages) {
    bool a = is_role(m, "assistant");
    w.add("<|im_start|>" + m.role + "\n", false);
    w.add(m.content, a);
    w.add("<|im_end|>", a);
    w.add("\n", false);
  }
}

// Llama 3: every message under a header, content trimmed. Llama 3.1+ always writes a system
// header holding the knowledge/today dates and the (trimmed) system message, if any.
void render_llama3(const ChatTemplate& t, std::span<const ChatMessage> messages, SpanWriter& w) {
  w.add(t.bos_text, false);
  size_t first = 0;
  if (t.dated_system) {
    std::string system = is_role(messages[0], "system") ? py_strip(messages[0].content) : "";
    first = is_role(messages[0], "system") ? 1 : 0;
    w.add("<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
          "Today Date: " + t.date_string + "\n\n" + system + "<|eot_id|>",
          false);
  }
  for (size_t i = first; i < messages.size(); ++i) {
    bool a = is_role(messages[i], "assistant");
    w.add("<|start_header_id|>" + messages[i].role + "<|end_header_id|>\n\n", false);
    w.add(py_strip(messages[i].content), a);
    w.add("<|eot_id|>", a);
  }
}

// Llama 2: <s>[INST] {user} [/INST] {assistant} </s>, the system message wrapped in <<SYS>>
// inside the first user turn; both stripped.
void render_llama2(const ChatTemplate& t, std::span<const ChatMessage> messages, SpanWriter& w) {
  size_t first = check_alternation(t, messages, true);
  for (size_t i = first; i < messages.size(); ++i) {
    const std::string& c = messages[i].content;
    if (is_role(messages[i], "user")) {
      std::string content =
          (i == first && first == 1) ? "<<SYS>>\n" + messages[0].content + "\n<</SYS>>\n\n" + c : c;
      w.add(t.bos_text + "[INST] " + py_strip(content) + " [/INST]", false);
    } else {
      w.add(" ", false);
      w.add(py_strip(c) + " </s>", true);
    }
  }
}

// Mistral v3 (7B-Instruct-v0.3): <s>[INST] {user}[/INST] {assistant}</s>, the system message
// before the last user message. Nemo: <s>[INST]{user}[/INST]{assistant}</s>. v1 (v0.1,
// Mixtral-8x7B): [INST] {user} [/INST]{assistant}</s>, no system role.
void render_mistral(const ChatTemplate& t, std::span<const ChatMessage> messages, SpanWriter& w) {
  size_t first = check_alternation(t, messages, !t.mistral_v1);
  size_t last_user = first;
  for (size_t i = first; i < messages.size(); ++i)
    if (is_role(messages[i], "user")) last_user = i;
  w.add(t.bos_text, false);
  for (size_t i = first; i < messages.size(); ++i) {
    const std::string& c = messages[i].content;
    if (is_role(messages[i], "user")) {
      if (t.mistral_v1) {
        w.add("[INST] " + c + " [/INST]", false);
      } else {
        const bool with_system = first == 1 && i == last_user &&
                                 (!t.system_only_when_last || i + 1 == messages.size());
        std::string system = with_system ? messages[0].content + "\n\n" : "";
        w.add((t.mistral_tight ? "[INST]" : "[INST] ") + system + c + "[/INST]", false);
      }
    } else if (t.mistral_v1 || t.mistral_tight) {
      w.add(c + "</s>", true);
    } else {
      w.add(" ", false);
      w.add(py_strip(c) + "</s>", true);
    }
  }
}

// Gemma: <bos><start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n...
// Gemma 1/2 reject a system message; Gemma 3 puts it (and a blank line) before the first
// user turn's content.
void render_gemma(const ChatTemplate& t, std::span<const ChatMessage> messages, SpanWriter& w) {
  size_t first = check_alternation(t, messages, t.system_in_first_user);
  w.add(t.bos_text, false);
  for (size_t i = first; i < messages.size(); ++i) {
    bool a = is_role(messages[i], "assistant");
    std::string prefix = (i == first && first == 1) ? messages[0].content + "\n\n" : "";
    w.add("<start_of_turn>" + std::string(a ? "model" : "user") + "\n" + prefix, false);
    w.add(py_strip(messages[i].content), a);
    w.add("<end_of_turn>", a);
    w.add("\n", false);
  }
}

std::string generation_prompt(const ChatTemplate& t) {
  switch (t.format) {
    case ChatFormat::ChatML: return "<|im_start|>assistant\n";
    case ChatFormat::Llama3: return "<|start_header_id|>assistant<|end_header_id|>\n\n";
    case ChatFormat::Gemma: return "<start_of_turn>model\n";
    case ChatFormat::Llama2:
    case ChatFormat::Mistral: return "";  // these templates end after [/INST]
  }
  return "";
}

bool contains(std::string_view s, std::string_view what) {
  return s.find(what) != std::string_view::npos;
}

// Undoes Jinja string-literal escapes (\n, \t, \', \", \\).
std::string unescape_literal(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '\\' || i + 1 == s.size()) {
      out += s[i];
      continue;
    }
    char c = s[++i];
    out += c == 'n' ? '\n' : c == 't' ? '\t' : c;
  }
  return out;
}

// The default system message a ChatML template writes when the conversation has none:
// the literal between "<|im_start|>system" + newline and "<|im_end|>" that contains no
// quote or Jinja syntax (so `'<|im_start|>system\n' + messages[0]['content']` is skipped).
std::string chatml_default_system(std::string_view t) {
  const std::string_view head = "<|im_start|>system";
  for (size_t at = t.find(head); at != std::string_view::npos; at = t.find(head, at + 1)) {
    size_t begin = at + head.size();
    if (t.substr(begin, 1) == "\n")
      begin += 1;
    else if (t.substr(begin, 2) == "\\n")
      begin += 2;
    else
      continue;
    size_t end = t.find("<|im_end|>", begin);
    if (end == std::string_view::npos) continue;
    std::string_view body = t.substr(begin, end - begin);
    bool plain = true;
    for (size_t i = 0; i < body.size() && plain; ++i) {
      if (body[i] == '\\') {
        ++i;
      } else if (body[i] == '\'' || body[i] == '"' || body[i] == '{' || body[i] == '}') {
        plain = false;
      }
    }
    if (plain && !body.empty()) return unescape_literal(body);
  }
  return "";
}

// The string literal right after the first `anchor`, unescaped ("" when there is none).
std::string literal_after(std::string_view t, std::string_view anchor) {
  size_t at = t.find(anchor);
  if (at == std::string_view::npos || at + anchor.size() >= t.size()) return "";
  const size_t begin = at + anchor.size() + 1;
  const char quote = t[begin - 1];
  if (quote != '\'' && quote != '"') return "";
  size_t end = begin;
  while (end < t.size() && t[end] != quote) end += t[end] == '\\' ? 2 : 1;
  return end < t.size() ? unescape_literal(t.substr(begin, end - begin)) : "";
}

// The fallback date of a Llama 3.1+ template (`set date_string = "26 Jul 2024"`).
std::string llama3_default_date(std::string_view t) {
  for (std::string_view key : {"date_string = \"", "date_string = '"}) {
    size_t at = t.find(key);
    if (at == std::string_view::npos) continue;
    size_t begin = at + key.size(), end = t.find(key.back(), begin);
    if (end != std::string_view::npos) return std::string(t.substr(begin, end - begin));
  }
  return "26 Jul 2024";
}

[[noreturn]] void unknown_template(const std::string& source, const std::string& why) {
  fail("{}: {}; choose the template by name with --chat-template NAME (one of {})", source,
       why, kNames);
}

}  // namespace

ChatTemplate chat_template_by_name(std::string_view name) {
  ChatTemplate t;
  t.name = std::string(name);
  if (name == "chatml" || name == "smollm2" || name == "qwen2" || name == "qwen2.5") {
    t.format = ChatFormat::ChatML;
    if (name == "smollm2")
      t.default_system = "You are a helpful AI assistant named SmolLM, trained by Hugging Face";
    if (name == "qwen2") t.default_system = "You are a helpful assistant.";
    if (name == "qwen2.5")
      t.default_system = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.";
  } else if (name == "llama3" || name == "llama3.1") {
    t.format = ChatFormat::Llama3;
    t.bos_text = "<|begin_of_text|>";
    t.dated_system = name == "llama3.1";
  } else if (name == "llama2") {
    t.format = ChatFormat::Llama2;
    t.bos_text = "<s>";
  } else if (name == "mistral" || name == "mistral-nemo" || name == "mistral-v1") {
    t.format = ChatFormat::Mistral;
    t.bos_text = "<s>";
    t.mistral_v1 = name == "mistral-v1";
    t.system_only_when_last = name == "mistral-nemo";
    t.mistral_tight = name == "mistral-nemo";
  } else if (name == "gemma" || name == "gemma3") {
    t.format = ChatFormat::Gemma;
    t.bos_text = "<bos>";
    t.system_in_first_user = name == "gemma3";
  } else {
    fail("unknown chat template '{}' (known: {})", name, kNames);
  }
  return t;
}

ChatTemplate detect_chat_template(std::string_view text, const std::string& source) {
  if (text.empty()) unknown_template(source, "the model has no chat template");
  if (contains(text, "<|im_start|>")) {
    if (contains(text, "<think>"))
      unknown_template(source, "reasoning (<think>) ChatML templates are not supported");
    ChatTemplate t = chat_template_by_name("chatml");
    t.default_system = chatml_default_system(text);
    for (const char* preset : {"smollm2", "qwen2", "qwen2.5"})
      if (chat_template_by_name(preset).default_system == t.default_system) t.name = preset;
    return t;
  }
  if (contains(text, "<|start_header_id|>") && contains(text, "<|eot_id|>")) {
    if (!contains(text, "Cutting Knowledge Date")) return chat_template_by_name("llama3");
    ChatTemplate t = chat_template_by_name("llama3.1");
    t.date_string = llama3_default_date(text);
    return t;
  }
  if (contains(text, "<start_of_turn>") && contains(text, "<end_of_turn>")) {
    if (!contains(text, "first_user_prefix")) return chat_template_by_name("gemma");
    // Gemma 3 writes the system message and a blank line; some derived templates use
    // another separator, which this renderer does not follow.
    if (literal_after(text, "first_user_prefix = messages[0]['content'] + ") != "\n\n")
      unknown_template(source, "a Gemma 3 chat template of an unknown variant");
    return chat_template_by_name("gemma3");
  }
  if (contains(text, "[INST]")) {
    if (contains(text, "<<SYS>>")) return chat_template_by_name("llama2");
    if (contains(text, "[SYSTEM_PROMPT]"))
      unknown_template(source, "Mistral [SYSTEM_PROMPT] templates are not supported");
    auto literal = [&](std::string_view s) {  // s as a whole '...' or "..." literal
      for (char quote : {'\'', '"'}) {
        std::string l(1, quote);
        l.append(s);
        l.push_back(quote);
        if (contains(text, l)) return true;
      }
      return false;
    };
    // v1 writes ' [/INST]' and has no system role; v3 writes '[/INST]' right after the text.
    if (literal(" [/INST]") && literal("[INST] ") && !contains(text, "system_message"))
      return chat_template_by_name("mistral-v1");
    const bool only_when_last = contains(text, "loop.last and system_message");
    // Nemo's published text writes "[INST]" + user + "[/INST]" with no spaces at all.
    if (literal("[INST]") && literal("[/INST]") && !contains(text, "[INST] ") && only_when_last)
      return chat_template_by_name("mistral-nemo");
    if (literal("[/INST]") && contains(text, "[INST] ") && !literal(" [INST] ")) {
      ChatTemplate t = chat_template_by_name("mistral");
      t.system_only_when_last = only_when_last;  // v3's later `loop.last` revision
      return t;
    }
    unknown_template(source, "an [INST] chat template of an unknown Mistral variant");
  }
  unknown_template(source, "unrecognised chat template (no ChatML, Llama 2/3, Mistral or Gemma "
                           "markers)");
}

std::vector<ChatSpan> render_chat_spans(const ChatTemplate& t,
                                        std::span<const ChatMessage> messages,
                                        bool add_generation_prompt) {
  check_messages(t, messages);
  SpanWriter w;
  switch (t.format) {
    case ChatFormat::ChatML: render_chatml(t, messages, w); break;
    case ChatFormat::Llama3: render_llama3(t, messages, w); break;
    case ChatFormat::Llama2: render_llama2(t, messages, w); break;
    case ChatFormat::Mistral: render_mistral(t, messages, w); break;
    case ChatFormat::Gemma: render_gemma(t, messages, w); break;
  }
  if (add_generation_prompt) w.add(generation_prompt(t), false);
  return w.spans;
}

std::string render_chat(const ChatTemplate& t, std::span<const ChatMessage> messages,
                        bool add_generation_prompt) {
  std::string out;
  for (const ChatSpan& s : render_chat_spans(t, messages, add_generation_prompt)) out += s.text;
  return out;
}

std::string end_of_turn_text(const ChatTemplate& t) {
  switch (t.format) {
    case ChatFormat::ChatML: return "<|im_end|>";
    case ChatFormat::Llama3: return "<|eot_id|>";
    case ChatFormat::Gemma: return "<end_of_turn>";
    case ChatFormat::Llama2:
    case ChatFormat::Mistral: return "</s>";
  }
  return "";
}

}  // namespace temper
