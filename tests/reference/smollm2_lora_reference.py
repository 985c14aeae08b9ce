"""Hugging Face reference for the LoRA test of tests/reference/test_smollm2_finetune.cpp:
SmolLM2-135M-Instruct as a Hugging Face directory (Temper's export of the GGUF), the LoRA
adapter Temper trained on it, and `temper merge`'s output.

For the chat prompt QUESTION (the base's chat template, add_generation_prompt=True):
  peft_logits    fp32 logits at every prompt position of PeftModel.from_pretrained(base, adapter)
  merged_logits  the same from transformers on the merged directory
  generated      greedy tokens of the merged model (a plain loop over forward with
                 past_key_values: generate() crashes on torch 1.13 / Python 3.11), up to
                 the end-of-turn token or 32 tokens; metadata "reply" is their text.

Usage: smollm2_lora_reference.py BASE_DIR ADAPTER_DIR MERGED_DIR QUESTION OUT.safetensors
"""
import sys

import torch
from peft import PeftModel
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

GREEDY_TOKENS = 32


def load(path):
    return AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()


def main(base_dir, adapter_dir, merged_dir, question, out_path):
    tok = AutoTokenizer.from_pretrained(base_dir)
    ids = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    end_of_turn = tok.convert_tokens_to_ids("<|im_end|>")
    with torch.no_grad():
        peft = PeftModel.from_pretrained(load(base_dir), adapter_dir).eval()
        peft_logits = peft(torch.tensor([ids])).logits[0]
        merged = load(merged_dir)
        out = merged(torch.tensor([ids]), use_cache=True)
        merged_logits = out.logits[0]
        generated = []
        for _ in range(GREEDY_TOKENS):
            token = int(torch.argmax(out.logits[0, -1]))
            generated.append(token)
            if token in (end_of_turn, tok.eos_token_id):
                break
            out = merged(torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True)
    save_file({"ids": torch.tensor(ids, dtype=torch.int32),
               "peft_logits": peft_logits.float().contiguous(),
               "merged_logits": merged_logits.float().contiguous(),
               "generated": torch.tensor(generated, dtype=torch.int32)},
              out_path, metadata={"reply": tok.decode(generated, skip_special_tokens=True)})


if __name__ == "__main__":
    main(*sys.argv[1:])
