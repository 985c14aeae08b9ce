// load_model_tokenizer: a model directory's tokenizer files, or a GGUF file's metadata.
#include "data/model_tokenizer.h"

#include <fmt/format.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "io/gguf.h"

namespace temper {

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {

std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) fail("{}: cannot open", p.string());
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace

ModelTokenizer load_model_tokenizer(const GgufFile& f) {
  ModelTokenizer m{Tokenizer::from_gguf(f)};
  if (f.has("tokenizer.chat_template")) m.chat_template = f.get_string("tokenizer.chat_template");
  m.bos_id = m.tokenizer.bos_id();
  m.eos_id = m.tokenizer.eos_id();
  // llama.cpp's default: SentencePiece vocabularies add BOS, BPE ones do not.
  const std::string key = "tokenizer.ggml.add_bos_token";
  m.add_bos = f.has(key) ? f.get_bool(key) : m.tokenizer.model_kind() == "sentencepiece";
  if (m.add_bos && !m.bos_id)
    fail("{}: metadata key '{}' is true but there is no tokenizer.ggml.bos_token_id", f.path, key);
  return m;
}

namespace {

// A special-token entry of tokenizer_config.json: "text" or {"content": "text", ...}.
std::optional<std::string> token_text(const json& cfg, const char* key, const std::string& src) {
  auto it = cfg.find(key);
  if (it == cfg.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string())
    return (*it)["content"].get<std::string>();
  fail("{}: {}: expected a string or an object with \"content\"", src, key);
}

// The chat template of tokenizer_config.json (a string, or a list of {name, template} with
// the one named "default"), else chat_template.jinja / chat_template.json beside it.
std::string chat_template_of(const json& cfg, const fs::path& dir, const std::string& src) {
  if (auto it = cfg.find("chat_template"); it != cfg.end() && !it->is_null()) {
    if (it->is_string()) return it->get<std::string>();
    if (it->is_array()) {
      for (auto& t : *it)
        if (t.is_object() && t.value("name", "") == "default" && t.contains("template") &&
            t["template"].is_string())
          return t["template"].get<std::string>();
      fail("{}: chat_template: a list without an entry named \"default\"", src);
    }
    fail("{}: chat_template: expected a string or a list of {{name, template}}", src);
  }
  if (fs::exists(dir / "chat_template.jinja")) return read_text(dir / "chat_template.jinja");
  if (fs::exists(dir / "chat_template.json")) {
    const std::string p = (dir / "chat_template.json").string();
    json j;
    try {
      j = json::parse(read_text(p));
    } catch (const json::exception& e) {
      fail("{}: invalid JSON: {}", p, e.what());
    }
    if (!j.is_object() || !j.contains("chat_template") || !j["chat_template"].is_string())
      fail("{}: expected {{\"chat_template\": \"...\"}}", p);
    return j["chat_template"].get<std::string>();
  }
  return "";
}

ModelTokenizer from_directory(const fs::path& dir) {
  const fs::path tj = dir / "tokenizer.json", tm = dir / "tokenizer.model";
  const bool has_json = fs::exists(tj);
  if (!has_json && !fs::exists(tm))
    fail("{}: no tokenizer.json or tokenizer.model in the model directory", dir.string());
  ModelTokenizer m{has_json ? Tokenizer::from_file(tj) : Tokenizer::from_sentencepiece_file(tm)};
  m.bos_id = m.tokenizer.bos_id();
  m.eos_id = m.tokenizer.eos_id();
  // A fast tokenizer adds what its post-processor template says; LlamaTokenizer adds BOS.
  m.add_bos = has_json ? m.tokenizer.bos_id().has_value() : m.bos_id.has_value();
  const fs::path cp = dir / "tokenizer_config.json";
  json cfg = json::object();
  if (fs::exists(cp)) {
    try {
      cfg = json::parse(read_text(cp));
    } catch (const json::exception& e) {
      fail("{}: invalid JSON: {}", cp.string(), e.what());
    }
    if (!cfg.is_object()) fail("{}: expected a JSON object", cp.string());
  }
  const std::string src = cp.string();
  for (auto [key, out] : {std::pair{"bos_token", &m.bos_id}, std::pair{"eos_token", &m.eos_id}}) {
    if (auto text = token_text(cfg, key, src)) {
      auto id = m.tokenizer.token_to_id(*text);
      if (!id) fail("{}: {} \"{}\" is not a token of the tokenizer", src, key, *text);
      *out = *id;
    }
  }
  if (auto it = cfg.find("add_bos_token"); it != cfg.end() && !it->is_null()) {
    if (!it->is_boolean()) fail("{}: add_bos_token: expected a boolean", src);
    m.add_bos = it->get<bool>();
  }
  if (m.add_bos && !m.bos_id) fail("{}: add_bos_token is true but there is no bos_token", src);
  m.chat_template = chat_template_of(cfg, dir, src);
  return m;
}

}  // namespace

bool is_gguf_file(const fs::path& p) {
  if (p.extension() == ".gguf") return true;
  char magic[4] = {};
  std::ifstream f(p, std::ios::binary);
  return f.read(magic, 4) && std::memcmp(magic, "GGUF", 4) == 0;
}

ModelTokenizer load_model_tokenizer(const fs::path& model) {
  if (fs::is_directory(model)) return from_directory(model);
  if (!fs::exists(model)) fail("{}: no such model directory or .gguf file", model.string());
  if (is_gguf_file(model)) return load_model_tokenizer(read_gguf(model.string(), /*read_tensor_data=*/false));
  fail("{}: not a model directory (with tokenizer.json or tokenizer.model) or a .gguf file",
       model.string());
}

}  // namespace temper
