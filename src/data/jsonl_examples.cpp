#include "data/jsonl_examples.h"

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace temper {
namespace {

using json = nlohmann::json;

json parse_object(std::string_view line) {
  json j;
  try {
    j = json::parse(line);
  } catch (const json::exception& e) {  // parse_error, and out_of_range for a number too large
    const std::string what = e.what();  // "[json.exception.parse_error.101] parse error at ..."
    const size_t at = what.find("] ");
    fail("invalid JSON: {}", at == std::string::npos ? what : what.substr(at + 2));
  }
  if (!j.is_object()) fail("expected a JSON object, got {}", j.type_name());
  return j;
}

const std::string& string_field(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end()) fail("{}missing \"{}\"", where, key);
  if (!it->is_string()) fail("{}\"{}\" must be a string, got {}", where, key, it->type_name());
  return it->get_ref<const std::string&>();
}

const json& array_field(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end()) fail("missing \"{}\"", key);
  if (!it->is_array()) fail("\"{}\" must be an array, got {}", key, it->type_name());
  if (it->empty()) fail("\"{}\" is empty", key);
  return *it;
}

// A conversation from an array of objects with a role key and a content key; `roles` maps
// the file's role names to ours.
std::vector<ChatMessage> conversation(const json& j, const char* array_key, const char* role_key,
                                      const char* content_key,
                                      const std::vector<std::pair<std::string, std::string>>& roles) {
  std::vector<ChatMessage> out;
  const json& turns = array_field(j, array_key);
  for (size_t i = 0; i < turns.size(); ++i) {
    const std::string where = fmt::format("{}[{}]: ", array_key, i);
    if (!turns[i].is_object()) fail("{}expected an object, got {}", where, turns[i].type_name());
    const std::string& role = string_field(turns[i], role_key, where);
    const std::string* ours = nullptr;
    std::string known;
    for (const auto& [theirs, mine] : roles) {
      if (role == theirs) ours = &mine;
      known += (known.empty() ? "" : ", ") + theirs;
    }
    if (!ours) fail("{}unknown {} '{}' (expected {})", where, role_key, role, known);
    out.push_back({*ours, string_field(turns[i], content_key, where)});
  }
  bool answered = false;
  for (const auto& m : out) answered |= m.role == "assistant";
  if (!answered) fail("\"{}\" has no assistant turn: nothing to train on", array_key);
  return out;
}

}  // namespace

JsonlFormat jsonl_format_from_name(std::string_view name) {
  if (name == "text") return JsonlFormat::Text;
  if (name == "alpaca") return JsonlFormat::Alpaca;
  if (name == "chat") return JsonlFormat::Chat;
  if (name == "sharegpt") return JsonlFormat::ShareGPT;
  fail("unknown data format '{}' (expected text, alpaca, chat, sharegpt or auto)", name);
}

const char* jsonl_format_name(JsonlFormat f) {
  switch (f) {
    case JsonlFormat::Text: return "text";
    case JsonlFormat::Alpaca: return "alpaca";
    case JsonlFormat::Chat: return "chat";
    case JsonlFormat::ShareGPT: return "sharegpt";
  }
  return "?";
}

JsonlFormat guess_jsonl_format(std::string_view line) {
  const json j = parse_object(line);
  if (j.contains("messages")) return JsonlFormat::Chat;
  if (j.contains("conversations")) return JsonlFormat::ShareGPT;
  if (j.contains("instruction")) return JsonlFormat::Alpaca;
  if (j.contains("text")) return JsonlFormat::Text;
  fail("cannot tell the format: no \"text\", \"instruction\", \"messages\" or \"conversations\" "
       "key (use --format)");
}

Example parse_example(std::string_view line, JsonlFormat format) {
  const json j = parse_object(line);
  Example e;
  switch (format) {
    case JsonlFormat::Text:
      e.text = string_field(j, "text", "");
      if (e.text.empty()) fail("\"text\" is empty");
      break;
    case JsonlFormat::Alpaca: {
      std::string user = string_field(j, "instruction", "");
      if (j.contains("input") && !j["input"].is_null()) {
        const std::string& input = string_field(j, "input", "");
        if (!input.empty()) user += "\n\n" + input;
      }
      e.messages = {{"user", user}, {"assistant", string_field(j, "output", "")}};
      break;
    }
    case JsonlFormat::Chat:
      e.messages = conversation(j, "messages", "role", "content",
                                {{"system", "system"}, {"user", "user"}, {"assistant", "assistant"}});
      break;
    case JsonlFormat::ShareGPT:
      e.messages = conversation(j, "conversations", "from", "value",
                                {{"system", "system"}, {"human", "user"}, {"gpt", "assistant"}});
      break;
  }
  return e;
}

}  // namespace temper
