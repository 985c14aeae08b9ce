"""Reference data for the byte-level BPE tokenizer test (test_tokenizer_reference.cpp).

Trains small byte-level BPE tokenizers with the Hugging Face `tokenizers` library itself,
saves each as tokenizer.json, encodes a varied test corpus with it and writes the
expected ids and decoded strings to expected.json:

  {"variants": [{"name", "tokenizer" (path), "bos" (id or null),
                 "cases": [{"text", "ids", "decoded"}]}]}

Variants:
  gpt2   - ByteLevel(use_regex=True) pre-tokenizer (the GPT-2 split regex), merges as
           [a, b] pairs.
  llama3 - Sequence[Split(Regex(Llama 3 pattern), isolated), ByteLevel(use_regex=False)],
           ignore_merges=True, a TemplateProcessing post-processor adding a BOS.
  smollm - Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=True)],
           legacy "a b" merge strings, non-special added tokens (one single_word),
           non-ASCII added tokens, a special added token with lstrip/rstrip.

usage: tokenizer_reference.py OUT_DIR
"""
import json
import os
import random
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers

LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
    r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SMOLLM_EXTRA = ["<tool> call <tool>x", "a  <mask>  b", "<mask>", " x<mask>\ny\u3000<mask>\u00a0z",
                "calc calculator recalc calc_x calc. 多calc calc1 (calc)", "<mask>calc<mask>",
                "ünï 多x多xünïünï x多 ü"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]

WORDS = {
    "en": "the quick brown fox jumps over lazy dog it's they're we've I'm you'll he'd "
          "don't can't won't shouldn't language model training data token tokenizer "
          "learning rate gradient batch optimizer checkpoint".split(),
    "de": "Größe Übung Bäume Straße Mädchen über schön Fußgänger Äpfel Öl für "
          "natürlich".split(),
    "zh": "我们 今天 学习 语言 模型 中文 分词 测试 数据 你好 世界".split(),
    "ar": "مرحبا بالعالم اللغة العربية نموذج تدريب".split(),
    "hi": "नमस्ते दुनिया भाषा मॉडल प्रशिक्षण".split(),
    "ru": "Привет мир язык модель обучение данные Ёлка".split(),
    "emoji": ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "❤️", "🚀", "✨"],
}
CODE = [
    "def f(x):\n    return x + 1\n",
    "for (int i = 0; i < n; ++i) {\n\tsum += a[i];\n}\n",
    "if __name__ == '__main__':\n        main()\n",
    "    # comment\n\n\n",
    "x = {'a': 1, 'b': [2, 3]}\r\n",
]


def make_corpus(rng, n):
    lines = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(3, 20)):
            r = rng.random()
            if r < 0.6:
                lang = rng.choice(list(WORDS))
                parts.append(rng.choice(WORDS[lang]))
            elif r < 0.75:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
            elif r < 0.9:
                parts.append(rng.choice(CODE))
            else:
                parts.append(rng.choice(["!", "?", ",", ".", "...", " - ", "(", ")", "\"", "'"]))
        lines.append(" ".join(parts))
    return lines


def test_cases(rng):
    cases = [
        "", " ", "  ", "\n", "\t", "Hello world", " Hello world", "Hello, world! 123",
        "The quick brown fox jumps over the lazy dog.",
        "Größe, Übung, Bäume und Straße: schön über Äpfel & Öl.",
        "我们今天学习语言模型。你好，世界！",
        "مرحبا بالعالم، هذه اللغة العربية.",
        "नमस्ते दुनिया, यह हिंदी है।",
        "Привет, мир! Ёлка и ЁЛКА.",
        "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🚀✨ family👨‍👩‍👧",
        "def f(x):\n    return x + 1\n\n\tindented\n\t\tmore\n        eight spaces\n",
        "line1\r\nline2\rline3\n\n\nline4",
        "a" + " " * 40 + "b", " " * 100, "\n" * 20, "\t \t \n \n  x",
        "trailing spaces   ", "   leading spaces",
        "it's isn't they're we've I'm you'll he'd IT'S THEY'RE WE'VE I'M YOU'LL HE'D It'S",
        "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'VE 'M 'LL 'D",
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\nHi!<|im_end|>",
        "<|endoftext|>", "text<|endoftext|>more", "<|im_start|><|im_end|>", "<|im_start",
        "<|im_end|x", "a<|endoftext|><|endoftext|>b", " <|im_start|> ",
        "nbsp\u00a0here ideographic\u3000space nel\u0085x ls\u2028ps\u2029 thin\u2009sp",
        "soft\u00adhyphen zero\u200bwidth bom\ufeff ctrl\x01\x02\x7f",
        "mixed123abc456 3.14159 1,000,000 -42 +7 1e-5 0x1F",
        "Ⅻ ½ ² ٣٤٥ ४५६",
        "a\u0085\u0085b \u0085 x\u00a0\u00a0 y\u3000\u3000z \u2028\u2028w",
        "x  \n  \n\n   y\r\n\r\n  z \t\n",
        "\"quoted\" (paren) [bracket] {brace} <angle> ... --- ___ !!! ???",
        "a" * 300, "ab" * 200, "😀" * 50,
    ]
    cases += ["".join(str(rng.randint(0, 9)) for _ in range(k)) for k in range(1, 13)]
    cases += ["x" + "".join(str(rng.randint(0, 9)) for _ in range(k)) + " y" for k in range(1, 13)]
    pool = list(" \n\t\r'.,!?-_()0123456789aAbBsStTzZäÖßéñ我学语ب्नЁж😀👍🏽\u200d\u00a0\u3000\u0085️")
    pool += ["'s", "'LL", "<|im_end|>", "<|endoftext|>", "<|im_", "|>", "    ", "\n\n"]
    for _ in range(150):
        cases.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 40))))
    return cases


def build(name, rng, corpus):
    if name == "gpt2":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    elif name == "llama3":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=True, use_regex=True),
        ])
    tok.decoder = decoders.ByteLevel()
    specials = SPECIALS + (["<|begin_of_text|>"] if name == "llama3" else [])
    trainer = trainers.BpeTrainer(vocab_size=800, min_frequency=2, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    bos = None
    if name == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.TemplateProcessing(
            single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
            special_tokens=[("<|begin_of_text|>", bos)])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=True)
    if name == "smollm":
        # "ünï" and "多x": non-ASCII contents, which decode through the ByteLevel decoder too.
        tok.add_tokens(["<tool>", AddedToken("calc", single_word=True), "ünï", "多x"])
        tok.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=True)])
    # Edit the serialized form (options the trainer does not carry), then reload it so
    # the expected ids come from exactly the file the C++ side reads.
    j = json.loads(tok.to_str())
    if name == "llama3":
        j["model"]["ignore_merges"] = True
    if name == "smollm":
        j["model"]["merges"] = [m if isinstance(m, str) else " ".join(m)
                                for m in j["model"]["merges"]]
    return Tokenizer.from_str(json.dumps(j, ensure_ascii=False)), j, bos


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(1234)
    corpus = make_corpus(rng, 3000)
    cases = test_cases(random.Random(99))
    result = {"variants": []}
    for name in ["gpt2", "llama3", "smollm"]:
        tok, j, bos = build(name, rng, corpus)
        path = os.path.join(out_dir, f"{name}.tokenizer.json")
        with open(path, "w", encoding="utf-8") as f:
            json.dump(j, f, ensure_ascii=False, indent=1)
        v_cases = []
        for text in cases + (SMOLLM_EXTRA if name == "smollm" else []):
            ids = tok.encode(text, add_special_tokens=False).ids
            v_cases.append({"text": text, "ids": ids,
                            "decoded": tok.decode(ids, skip_special_tokens=False)})
        result["variants"].append({"name": name, "tokenizer": path, "bos": bos,
                                   "vocab_size": tok.get_vocab_size(), "cases": v_cases})
        print(f"{name}: vocab {tok.get_vocab_size()}, {len(v_cases)} cases")
    with open(os.path.join(out_dir, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
