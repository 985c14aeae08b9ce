// Chat templates: built-in renderers for the common Hugging Face chat formats, chosen
// from a model's Jinja template text (detect_chat_template) or by name. The rendered text
// equals transformers' apply_chat_template(messages, tokenize=False,
// add_generation_prompt=...) for each format's published template.
//
//   chatml   <|im_start|>{role}\n{content}<|im_end|>\n ... (SmolLM2, Qwen2: a default
//            system message is inserted when the first message is not a system one)
//   llama3   <|begin_of_text|><|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>
//   llama2   <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>
//   mistral  <s>[INST] {user}[/INST] {assistant}</s> (v3; the system message goes before the
//            last user message); mistral-nemo (Mistral-Nemo-Instruct-2407's published text):
//            <s>[INST]{user}[/INST]{assistant}</s>, the system message only when that last
//            user message ends the conversation; mistral-v1: [INST] {user} [/INST]{assistant}</s>,
//            no system
//   gemma    <bos><start_of_turn>user\n{content}<end_of_turn>\n<start_of_turn>model\n...
//            (Gemma 1/2: a system message is an error, as in their template; gemma3 puts
//            it before the first user turn)
//
// Roles are system | user | assistant. render_chat_spans splits the same text into spans
// marked trainable (assistant content plus its end-of-turn marker) or not (everything else),
// so a data pipeline can build a loss mask.
#pragma once
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace temper {

struct ChatMessage {
  std::string role, content;  // role: system | user | assistant
};

enum class ChatFormat { ChatML, Llama3, Llama2, Mistral, Gemma };

struct ChatTemplate {
  ChatFormat format = ChatFormat::ChatML;
  // ChatML models like SmolLM2 and Qwen2 insert this system message when the conversation
  // does not start with one; empty = insert nothing.
  std::string default_system;
  // The BOS text the template writes first ("<|begin_of_text|>", "<s>", "<bos>"; empty
  // for ChatML).
  std::string bos_text;
  std::string name;  // "chatml", "llama3", ... (for messages and dataset attributes)
  // Llama 3.1+ always writes a system header with "Cutting Knowledge Date: December 2023"
  // and "Today Date: {date_string}" (the templates' fixed fallback date; Hugging Face
  // renders today's date when strftime_now exists, which would make data depend on the day).
  bool dated_system = false;
  std::string date_string = "26 Jul 2024";
  // Mistral v1 (7B-Instruct-v0.1, Mixtral-8x7B-Instruct-v0.1): "[INST] u [/INST]a</s>", no
  // system role. Otherwise v3 (v0.3, Nemo): "[INST] u[/INST] a</s>", the system message
  // before the last user message.
  bool mistral_v1 = false;
  // `loop.last and system_message` (Mistral Nemo, later v3 revisions): the system message
  // is written only when that last user message ends the conversation, so a conversation
  // ending with an answer loses it, exactly as transformers renders it.
  bool system_only_when_last = false;
  // Mistral Nemo's published template (Tekken tokenizer): "[INST]" + user + "[/INST]" and the
  // answer as it is + "</s>", with no spaces added and nothing stripped.
  bool mistral_tight = false;
  // Gemma 3 puts a system message before the first user turn; Gemma 1/2 reject it.
  bool system_in_first_user = false;
};

// Picks the format from a Jinja chat template's distinctive markers (and, for ChatML, the
// default system prompt it inserts). An empty or unrecognised template is a temper::Error
// naming `source` and telling the user to choose a template by name (--chat-template).
ChatTemplate detect_chat_template(std::string_view jinja_text, const std::string& source);

// "chatml" (no default system), "smollm2", "qwen2", "qwen2.5", "llama3", "llama3.1" (3.1-3.3),
// "llama2", "mistral", "mistral-nemo", "mistral-v1", "gemma", "gemma3";
// an unknown name is a temper::Error listing the known ones.
ChatTemplate chat_template_by_name(std::string_view name);

std::string render_chat(const ChatTemplate& tmpl, std::span<const ChatMessage> messages,
                        bool add_generation_prompt);

struct ChatSpan {
  std::string text;
  bool trainable = false;  // assistant content + its end-of-turn marker
};
// The same text as render_chat, cut into spans; adjacent spans with equal flags are merged.
// Invalid input (unknown role, bad role order for the format) is a temper::Error naming
// the message index.
std::vector<ChatSpan> render_chat_spans(const ChatTemplate& tmpl,
                                        std::span<const ChatMessage> messages,
                                        bool add_generation_prompt);

// The marker that ends an assistant turn: "<|im_end|>", "<|eot_id|>", "</s>", "<end_of_turn>".
std::string end_of_turn_text(const ChatTemplate& tmpl);

}  // namespace temper
