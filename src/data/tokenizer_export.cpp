// save_hf_tokenizer_files: copies a model directory's tokenizer files, or writes a GGUF
// file's tokenizer as the tokenizer.json / tokenizer_config.json / special_tokens_map.json
// that transformers' converters would give (convert_slow_tokenizer.py LlamaConverter for
// SentencePiece vocabularies; the model's own tokenizer.json for byte-level BPE ones).
#include "data/tokenizer_export.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/model_tokenizer.h"
#include "data/tokenizer_impl.h"
#include "io/gguf.h"

namespace temper {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace tokenizer_detail;

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581 "▁", SentencePiece's space

// The files of a Hugging Face model directory that travel with its tokenizer.
constexpr const char* kTokenizerFiles[] = {
    "tokenizer.json",          "tokenizer.model",        "tokenizer_config.json",
    "special_tokens_map.json", "generation_config.json", "chat_template.jinja",
    "added_tokens.json",       "vocab.json",             "merges.txt"};

void make_directory(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) fail("{}: cannot create the output directory: {}", dir.string(), ec.message());
  if (!fs::is_directory(dir)) fail("{}: cannot create the output directory: a file is in the way", dir.string());
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  if (!f) fail("{}: cannot open for writing", p.string());
  f.write(text.data(), std::streamsize(text.size()));
  f.close();
  if (!f) fail("{}: write failed (disk full?)", p.string());
}

std::vector<fs::path> copy_tokenizer_files(const fs::path& dir, const fs::path& out_dir) {
  std::vector<fs::path> written;
  for (const char* name : kTokenizerFiles) {
    const fs::path from = dir / name, to = out_dir / name;
    if (!fs::exists(from)) continue;
    std::error_code ec;
    if (fs::exists(to) && fs::equivalent(from, to, ec)) continue;  // writing into the model dir
    fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
    if (ec) fail("{}: cannot copy {} there: {}", to.string(), from.string(), ec.message());
    written.push_back(to);
  }
  return written;
}

size_t utf8_length(std::string_view s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

// The merges transformers derives from a SentencePiece BPE vocab (convert_slow_tokenizer.py
// generate_merges): every split of a piece into two pieces at a character boundary; within a
// piece ordered by (left id, right id), then all stably ordered by the piece's score, then
// the left part's length, then the right part's length, each highest first.
json sentencepiece_merges(const SpSpec& spec) {
  StringMap vocab;
  for (size_t i = 0; i < spec.pieces.size(); ++i) vocab.emplace(spec.pieces[i].piece, int32_t(i));
  struct Merge {
    int32_t left, right;
    float score;
    size_t left_chars, right_chars;
  };
  std::vector<Merge> merges, local;
  for (const SpPiece& p : spec.pieces) {
    const std::string_view s = p.piece;
    local.clear();
    for (size_t i = 0; i < s.size();) {
      utf8_next(s, i);
      if (i == s.size()) break;
      auto l = vocab.find(s.substr(0, i)), r = vocab.find(s.substr(i));
      if (l != vocab.end() && r != vocab.end())
        local.push_back({l->second, r->second, p.score, utf8_length(s.substr(0, i)), utf8_length(s.substr(i))});
    }
    std::sort(local.begin(), local.end(), [](const Merge& a, const Merge& b) {
      return a.left != b.left ? a.left < b.left : a.right < b.right;
    });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const Merge& a, const Merge& b) {
    if (a.score != b.score) return a.score > b.score;
    if (a.left_chars != b.left_chars) return a.left_chars > b.left_chars;
    return a.right_chars > b.right_chars;
  });
  // "left right" strings, as most tokenizer.json files have them, unless a piece holds a
  // space: then [left, right] pairs (tokenizers >= 0.20).
  bool pairs = false;
  for (const SpPiece& p : spec.pieces) pairs = pairs || p.piece.find(' ') != std::string::npos;
  json out = json::array();
  for (const Merge& m : merges) {
    const std::string &l = spec.pieces[m.left].piece, &r = spec.pieces[m.right].piece;
    out.push_back(pairs ? json::array({l, r}) : json(l + " " + r));
  }
  return out;
}

json added_token(int32_t id, const std::string& content, bool special) {
  return {{"id", id},           {"content", content}, {"single_word", false}, {"lstrip", false},
          {"rstrip", false},    {"normalized", false}, {"special", special}};
}

// tokenizer.json for GGUF "llama" metadata, as LlamaConverter writes it with legacy=True: the
// normalizer prepends "▁" to each text segment and turns spaces into "▁"; control and unknown
// pieces are special added tokens, user-defined ones plain added tokens.
json sentencepiece_json(const SpSpec& spec, const std::string& where) {
  if (spec.remove_extra_whitespaces)
    fail("{}: metadata key 'tokenizer.ggml.remove_extra_whitespaces' is true: SentencePiece's "
         "whitespace folding has no tokenizer.json form", where);
  json vocab = json::object(), added = json::array();
  std::string unk;
  for (size_t i = 0; i < spec.pieces.size(); ++i) {
    const SpPiece& p = spec.pieces[i];
    vocab[p.piece] = i;
    if (p.type == kSpUnknown) unk = p.piece;
    if (p.type == kSpUnknown || p.type == kSpControl || p.type == kSpUserDefined)
      added.push_back(added_token(int32_t(i), p.piece, p.type != kSpUserDefined));
  }
  json j;
  j["added_tokens"] = std::move(added);
  json norm = json::array();
  if (spec.add_dummy_prefix) norm.push_back({{"type", "Prepend"}, {"prepend", kSpace}});
  if (spec.escape_whitespaces)
    norm.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}});
  j["normalizer"] = {{"type", "Sequence"}, {"normalizers", std::move(norm)}};
  j["pre_tokenizer"] = nullptr;
  json dec = json::array({{{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}},
                          {{"type", "ByteFallback"}}, {{"type", "Fuse"}}});
  if (spec.add_dummy_prefix)
    dec.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  j["decoder"] = {{"type", "Sequence"}, {"decoders", std::move(dec)}};
  j["model"] = {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", unk},
                {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
                {"fuse_unk", true}, {"byte_fallback", spec.byte_fallback},
                {"ignore_merges", false}, {"vocab", std::move(vocab)},
                {"merges", sentencepiece_merges(spec)}};
  return j;
}

// TemplateProcessing adding BOS / EOS as LlamaTokenizerFast.update_post_processor builds it
// ("<s>:0 $A:0 </s>:0", pair "... <s>:1 $B:1 </s>:1"); null when it adds nothing.
json post_processor(const Tokenizer& tok, std::optional<int32_t> bos, std::optional<int32_t> eos) {
  if (!bos && !eos) return nullptr;
  json specials = json::object();
  auto special = [&](int32_t id, int type_id) {
    const std::string& t = tok.id_to_token(id);
    specials[t] = {{"id", t}, {"ids", json::array({id})}, {"tokens", json::array({t})}};
    return json{{"SpecialToken", {{"id", t}, {"type_id", type_id}}}};
  };
  auto sequence = [](const char* id, int type_id) {
    return json{{"Sequence", {{"id", id}, {"type_id", type_id}}}};
  };
  json single = json::array(), pair;
  if (bos) single.push_back(special(*bos, 0));
  single.push_back(sequence("A", 0));
  if (eos) single.push_back(special(*eos, 0));
  pair = single;
  if (bos) pair.push_back(special(*bos, 1));
  pair.push_back(sequence("B", 1));
  if (eos) pair.push_back(special(*eos, 1));
  return {{"type", "TemplateProcessing"}, {"single", std::move(single)}, {"pair", std::move(pair)},
          {"special_tokens", std::move(specials)}};
}

std::vector<fs::path> write_gguf_tokenizer(const fs::path& path, const fs::path& out_dir) {
  const GgufFile f = read_gguf(path.string(), /*read_tensor_data=*/false);
  const ModelTokenizer mt = load_model_tokenizer(f);  // validates everything first
  const Tokenizer& tok = mt.tokenizer;
  const bool sentencepiece = gguf_tokenizer_model(f) == "llama";
  const size_t n = size_t(tok.vocab_size());
  const bool add_eos = f.has("tokenizer.ggml.add_eos_token") && f.get_bool("tokenizer.ggml.add_eos_token");
  if (add_eos && !mt.eos_id)
    fail("{}: metadata key 'tokenizer.ggml.add_eos_token' is true but there is no "
         "tokenizer.ggml.eos_token_id", f.path);

  json j = sentencepiece ? sentencepiece_json(gguf_sentencepiece_spec(f), f.path)
                         : gguf_bpe_tokenizer_json(f);
  j["version"] = "1.0";
  j["truncation"] = nullptr;
  j["padding"] = nullptr;
  j["post_processor"] = post_processor(tok, mt.add_bos ? mt.bos_id : std::nullopt,
                                       add_eos ? mt.eos_id : std::nullopt);

  // Token texts for tokenizer_config.json; null where the GGUF names none, so that
  // LlamaTokenizerFast does not fall back to its "<s>" / "</s>" defaults.
  auto text_of = [&](std::optional<int32_t> id) { return id ? json(tok.id_to_token(*id)) : json(nullptr); };
  const std::optional<int32_t> unk =
      sentencepiece ? tok.unk_id() : gguf_token_id(f, "tokenizer.ggml.unknown_token_id", n);
  const std::optional<int32_t> pad = gguf_token_id(f, "tokenizer.ggml.padding_token_id", n);
  json specials = json::object();
  for (auto [key, id] : {std::pair{"bos_token", mt.bos_id}, std::pair{"eos_token", mt.eos_id},
                         std::pair{"unk_token", unk}, std::pair{"pad_token", pad}})
    if (id) specials[key] = tok.id_to_token(*id);
  json cfg = {{"tokenizer_class", sentencepiece ? "LlamaTokenizer" : "PreTrainedTokenizerFast"},
              {"add_bos_token", mt.add_bos}, {"add_eos_token", add_eos},
              {"bos_token", text_of(mt.bos_id)}, {"eos_token", text_of(mt.eos_id)},
              {"unk_token", text_of(unk)}, {"pad_token", text_of(pad)},
              {"clean_up_tokenization_spaces", false}};
  if (sentencepiece) cfg["legacy"] = true;  // each text segment gets the dummy prefix
  if (!mt.chat_template.empty()) cfg["chat_template"] = mt.chat_template;

  make_directory(out_dir);
  std::vector<fs::path> written;
  for (auto& [name, doc] : {std::pair{"tokenizer.json", &j}, std::pair{"tokenizer_config.json", &cfg},
                            std::pair{"special_tokens_map.json", &specials}}) {
    written.push_back(out_dir / name);
    std::string text;
    try {
      text = doc->dump(2, ' ', false, json::error_handler_t::strict) + "\n";
    } catch (const json::exception& e) {  // a token that is not valid UTF-8
      fail("{}: cannot write {}: {}", f.path, written.back().string(), e.what());
    }
    write_text(written.back(), text);
  }
  return written;
}

}  // namespace

std::vector<fs::path> save_hf_tokenizer_files(const fs::path& model, const fs::path& out_dir) {
  if (fs::is_directory(model)) {
    make_directory(out_dir);
    return copy_tokenizer_files(model, out_dir);
  }
  if (!fs::exists(model)) fail("{}: no such model directory or .gguf file", model.string());
  if (!is_gguf_file(model)) fail("{}: not a model directory or a .gguf file", model.string());
  return write_gguf_tokenizer(model, out_dir);
}

}  // namespace temper
