"""Seed files the reference libraries write (tests/fuzz/make-seeds.sh calls this; the output
is committed under tests/fuzz/corpus/): GGUF files (gguf), tokenizer.json files (tokenizers),
SentencePiece models (sentencepiece) and adapter_config.json files (peft).
    python make_seeds.py CORPUS_DIR"""
import json
import os
import sys
import tempfile

import numpy as np

corpus = sys.argv[1]
TEXT = ("The quick brown fox jumps over the lazy dog. Hello, world! It's 2024.\n"
        "naïve café déjà vu — 123 456 7890\n" * 4)


def out(target, name):
    os.makedirs(os.path.join(corpus, target), exist_ok=True)
    return os.path.join(corpus, target, name)


def gguf_seeds():
    import gguf
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(8)] + ["▁a", "▁b", "ab", "▁", "a"]
    for kind in ("llama", "gpt2"):
        w = gguf.GGUFWriter(out("gguf", f"tiny-{kind}.gguf"), "llama")
        w.add_block_count(1)
        w.add_context_length(16)
        w.add_embedding_length(8)
        w.add_feed_forward_length(12)
        w.add_head_count(2)
        w.add_head_count_kv(1)
        w.add_layer_norm_rms_eps(1e-5)
        w.add_rope_freq_base(10000.0)
        w.add_tokenizer_model(kind)
        if kind == "llama":
            w.add_token_list(tokens)
            w.add_token_scores([0.0] * 3 + [0.0] * 8 + [-1.0, -2.0, -3.0, -4.0, -5.0])
            w.add_token_types([2, 3, 3] + [6] * 8 + [1] * 5)
        else:
            w.add_tokenizer_pre("smollm")
            w.add_token_list(["<|endoftext|>", "a", "b", "Ġ", "Ġa", "ab"])
            w.add_token_types([3, 1, 1, 1, 1, 1])
            w.add_token_merges(["Ġ a", "a b"])
        w.add_bos_token_id(1 if kind == "llama" else 0)
        w.add_eos_token_id(2 if kind == "llama" else 0)
        w.add_chat_template("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")
        rng = np.random.default_rng(1)
        w.add_tensor("token_embd.weight", rng.standard_normal((16, 8)).astype(np.float32))
        w.add_tensor("output_norm.weight", np.ones(8, dtype=np.float16))
        q = gguf.quants.quantize(rng.standard_normal((8, 32)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        w.add_tensor("blk.0.attn_q.weight", q, raw_shape=q.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def tokenizer_json_seeds():
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    bl = Tokenizer(models.BPE())
    bl.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bl.decoder = decoders.ByteLevel()
    bl.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    bl.save(out("tokenizer_json", "byte-level-bpe.json"))
    sp = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    sp.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    sp.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    sp.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]))
    sp.save(out("tokenizer_json", "byte-fallback-bpe.json"))
    ms = Tokenizer(models.BPE())
    ms.normalizer = normalizers.NFKC()
    ms.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.Metaspace()])
    ms.decoder = decoders.Metaspace()
    ms.train_from_iterator([TEXT], trainers.BpeTrainer(vocab_size=90))
    ms.save(out("tokenizer_json", "metaspace-digits-bpe.json"))


def sentencepiece_seeds():
    import sentencepiece as spm
    with tempfile.TemporaryDirectory() as d:
        text = os.path.join(d, "text.txt")
        with open(text, "w") as f:
            f.write(TEXT * 8)
        # identity: no normalizer (small files); nmt_nfkc: the precompiled charsmap (~240 KB).
        for model_type, size, rule in (("bpe", 330, "identity"), ("unigram", 60, "identity"), ("unigram", 60, "nmt_nfkc")):
            name = f"{model_type}-{rule}"
            prefix = os.path.join(d, name)
            spm.SentencePieceTrainer.train(input=text, model_prefix=prefix, vocab_size=size, model_type=model_type,
                                           byte_fallback=(model_type == "bpe"), hard_vocab_limit=False,
                                           normalization_rule_name=rule, minloglevel=2)
            with open(prefix + ".model", "rb") as f, open(out("sentencepiece", f"{name}.model"), "wb") as g:
                g.write(f.read())


def adapter_config_seeds():
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig
    configs = {
        "lora": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
        "rslora-dora": LoraConfig(r=2, lora_alpha=4, use_rslora=True, use_dora=True, layers_to_transform=[0],
                                  target_modules=["q_proj"], modules_to_save=["lm_head"], task_type="CAUSAL_LM"),
        "ia3": IA3Config(target_modules=["k_proj", "down_proj"], feedforward_modules=["down_proj"], task_type="CAUSAL_LM"),
        "prompt": PromptTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
        "p-tuning": PromptEncoderConfig(num_virtual_tokens=4, encoder_hidden_size=8, task_type="CAUSAL_LM"),
        "prefix": PrefixTuningConfig(num_virtual_tokens=4, task_type="CAUSAL_LM"),
    }
    for name, config in configs.items():
        d = config.to_dict()
        d = {k: (sorted(v) if isinstance(v, set) else v) for k, v in d.items()}
        with open(out("adapter_config", name + ".json"), "w") as f:
            json.dump(d, f, indent=2, sort_keys=True)
    # AdapterHub's bottleneck adapter config, as adapters 1.0 writes it (keys from its BnConfig).
    hub = {"config": {"mh_adapter": False, "output_adapter": True, "reduction_factor": 4, "non_linearity": "swish",
                      "original_ln_before": False, "original_ln_after": True, "residual_before_ln": True,
                      "adapter_residual_before_ln": False, "ln_before": False, "ln_after": False,
                      "init_weights": "bert", "is_parallel": False, "scaling": 1.0, "use_gating": False,
                      "architecture": "bottleneck", "leave_out": [], "dropout": 0.0, "phm_layer": False,
                      "inv_adapter": None, "cross_adapter": False},
           "hidden_size": 8, "model_class": "LlamaForCausalLM", "model_name": "tiny", "model_type": "llama",
           "name": "bottleneck", "version": "adapters.1.0.1"}
    with open(out("adapter_config", "adapterhub-bottleneck.json"), "w") as f:
        json.dump(hub, f, indent=2)


gguf_seeds()
tokenizer_json_seeds()
sentencepiece_seeds()
adapter_config_seeds()
