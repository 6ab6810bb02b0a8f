#!/usr/bin/env python3
"""Golden files for supervised fine-tuning, written by TRL's SFTTrainer itself.

    .venv-ref/bin/python scripts/make_sft_golden.py [--out tests/golden/sft]

Needs the reference venv (scripts/ref_env.sh: torch, transformers, trl, datasets), the prepared
fortunes (data/fortunes/tokenizer.json: scripts/quickstart.sh or `lantern prepare`) and
data/fortune-sft (scripts/make_fortune_sft.py).

Writes `<out>/model/`: a tiny Llama (2 layers, 16 wide, 4 heads sharing 2 key/value heads,
tied embeddings, random weights) with the fortunes' byte-level BPE tokenizer, to which two
special tokens (`<|im_start|>`, `<|im_end|>`) and a post-processor that starts every sequence
with `<|endoftext|>` (a BOS, as Llama tokenizers add one) are added, and a ChatML-style chat
template in tokenizer_config.json (a default system message, `.strip()`, `raise_exception`,
the generation prompt). Then, for each of TRL's layouts (`text`, `prompt-completion`,
`messages`, conversational prompt-completion `conv-prompt-completion` made from the
messages, and `messages-assistant`: two-turn conversations of consecutive messages records,
trained with `assistant_only_loss=True` and the `{% generation %}` template `<out>/generation.jinja`
given as `chat_template_path`), `<out>/<layout>/`:
- `train.jsonl`, `validation.jsonl`: the first 12 / 6 records of data/fortune-sft (the
  conversational prompt-completion records split the messages into the user's prompt and the
  assistant's completion);
- `expected.json`: the examples TRL prepared (`input_ids`, `labels`, after its EOS, chat
  template, completion mask, truncation to `max_length` 64 and dropping of examples left without
  labels), and `eval_loss` before and after each of 6 optimizer steps of SFTTrainer training on
  all training examples as one batch (AdamW, constant learning rate 5e-2, no weight decay,
  gradient clipping at 1.0, fp32 on the CPU), each evaluation on all validation examples as one
  batch (so transformers' eval_loss is the mean over their label tokens), with TRL's
  eval_mean_token_accuracy.
Packed layouts (TRL's `packing=True`), each with the records of the layout it names:
`prompt-completion-packed` (best-fit decreasing, TRL's default: padding-free batches whose
positions restart in every sequence), `text-packed-split` (`packing_strategy="bfd_split"`,
`max_length` 48, so long examples are split) and `messages-packed-wrapped` (`"wrapped"`); their
`expected.json` lists the packed rows with TRL's `seq_lengths` and the strategy under `packing`.
`prompt-completion-dft`: the prompt-completion records trained and evaluated with TRL's
`loss_type="dft"` (each target's loss weighted by its detached probability). Every
`expected.json` also has `train_loss`, the loss TRL logged at each step (its batch's, before
the update).
And `<out>/templates.json`: chat templates written in the idioms of released models' templates
(ChatML with tools and whitespace control, Llama 3's headers with `trim`, Gemma's role mapping
and alternation check, Mistral's `[INST]`, a `namespace` gathering system messages with
`tojson`, `.get()`, `split`/`join` and `break`, and content given as a list of parts), each
rendered by transformers' `apply_chat_template(..., tokenize=False)` on several conversations
with and without the generation prompt: the text, or the error message it raised.
"""
import argparse
import json
import os
import shutil
import tempfile

import torch
from datasets import Dataset
from tokenizers import AddedToken, Tokenizer, processors
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM
from trl import SFTConfig, SFTTrainer

MAX_LENGTH, STEPS, LR = 64, 6, 5e-2
N_TRAIN, N_VAL = 12, 6
TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] != 'system' %}"
    "<|im_start|>system\nYou name who said it.<|im_end|>\n"
    "{% endif %}"
    "{% for m in messages %}"
    "{% if m['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('unknown role ' + m['role']) }}"
    "{% endif %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'].strip() }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


TEMPLATES = {
    "chatml_tools": (
        "{%- if tools %}<|im_start|>system\nTools: {{ tools | length }}<|im_end|>\n{%- endif %}\n"
        "{%- for message in messages %}\n"
        "    {%- if loop.first and message.role != 'system' %}\n"
        "<|im_start|>system\nYou are helpful.<|im_end|>\n"
        "    {%- endif %}\n"
        "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
        "{%- endfor %}\n"
        "{%- if add_generation_prompt %}\n<|im_start|>assistant\n{%- endif %}\n"
    ),
    "llama3_headers": (
        "{{- bos_token }}\n"
        "{%- if messages[0]['role'] == 'system' %}\n"
        "    {%- set system = messages[0]['content'] | trim %}\n"
        "    {%- set messages = messages[1:] %}\n"
        "{%- else %}\n    {%- set system = '' %}\n{%- endif %}\n"
        "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + system + '<|eot_id|>' }}\n"
        "{%- for message in messages %}\n"
        "    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}\n"
        "{%- endfor %}\n"
        "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}\n"
    ),
    "gemma_alternating": (
        "{{ bos_token }}"
        "{% for message in messages %}"
        "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
        "{% endif %}"
        "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
        "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
    ),
    "mistral_inst": (
        "{{- bos_token }}\n"
        "{%- for message in messages %}\n"
        "    {%- if message['role'] == 'user' %}\n"
        "        {{- ' [INST] ' + message['content'].strip() + ' [/INST]' }}\n"
        "    {%- elif message['role'] == 'assistant' %}\n"
        "        {{- ' ' + message['content'] + eos_token }}\n"
        "    {%- else %}\n"
        "        {{- '[SYS]' + message['content'].upper() + '[/SYS]' }}\n"
        "    {%- endif %}\n"
        "{%- endfor %}\n"
    ),
    "namespace_json": (
        "{%- set ns = namespace(system='', turns=0) %}\n"
        "{%- for m in messages %}\n"
        "  {%- if m['role'] == 'system' %}{% set ns.system = ns.system + m['content'] %}{% continue %}{% endif %}\n"
        "  {%- set ns.turns = ns.turns + 1 %}\n"
        "  {%- if ns.turns > 3 %}{% break %}{% endif %}\n"
        "{{ ns.turns }}. {{ m.get('name', 'anon') }}: {{ m['content'].split('\\n') | join(' / ') }}\n"
        "{{ m | tojson }}\n"
        "{% endfor %}\n"
        "system={{ ns.system }}|{{ messages | length }}|{{ add_generation_prompt }}"
    ),
    "content_parts": (
        "{% for message in messages %}"
        "<{{ message['role'] }}>"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'text' %}{{ part['text'] }}{% else %}[{{ part['type'] }}]{% endif %}"
        "{% endfor %}{% endif %}"
        "</{{ message['role'] }}>\n"
        "{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    ),
}

# transformers' {% generation %} blocks around the assistant's text (TRL's assistant_only_loss).
GEN_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\nTools:\n"
    "{%- for tool in tools %}\n{{ tool | tojson }}{% endfor %}<|im_end|>\n{% endif %}"
    "{%- for message in messages %}\n"
    "{%- if message.role == 'assistant' %}\n"
    "<|im_start|>assistant\n"
    "{% generation %}{{ message.content | trim }}<|im_end|>{% endgeneration %}\n\n"
    "{%- else %}\n"
    "<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n"
    "{%- endif %}\n"
    "{% endfor %}\n"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TEMPLATES["generation_marks"] = GEN_TEMPLATE

# Function schemas, as TRL's `tools` column holds them (JSON text) and apply_chat_template takes.
TOOLS = [{"type": "function", "function": {"name": "who_said", "parameters": {"q": "string"}}}]

CONVERSATIONS = [
    [{"role": "system", "content": "  Be brief.\n"},
     {"role": "user", "content": "Who said this?\n\nA fool and his money are soon parted."},
     {"role": "assistant", "content": "Thomas Tusser"},
     {"role": "user", "content": " And this? "}],
    [{"role": "user", "content": "Hello \"world\" <b>&</b> café"}],
    [{"role": "user", "content": "one", "name": "ann"},
     {"role": "assistant", "content": "two\nlines"},
     {"role": "user", "content": "three"}, {"role": "assistant", "content": "four"},
     {"role": "user", "content": "five"}],
    [{"role": "user", "content": [{"type": "text", "text": "look: "}, {"type": "image"}]},
     {"role": "assistant", "content": "a cat"}],
]


def write_templates(model_dir, out):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = []
    for name, template in TEMPLATES.items():
        cases = []
        # Every conversation with and without the generation prompt; the second also with tools.
        runs = [(m, g, None) for m in CONVERSATIONS for g in (False, True)]
        runs.append((CONVERSATIONS[1], True, TOOLS))
        for messages, gen, tools in runs:
            # As text, so that a reader keeps the keys' order (Python's dicts do).
            case = {"messages": json.dumps(messages, ensure_ascii=False),
                    "add_generation_prompt": gen}
            if tools is not None:
                case["tools"] = json.dumps(tools, ensure_ascii=False)
            try:
                case["text"] = tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=gen, chat_template=template,
                    tools=tools)
            except Exception as e:  # the template's own raise_exception, or jinja's errors
                case["error"] = str(e)
            if "{% generation %}" in template and "text" in case:
                enc = tokenizer.apply_chat_template(
                    messages, tokenize=True, return_dict=True, add_generation_prompt=gen,
                    return_assistant_tokens_mask=True, chat_template=template, tools=tools)
                case["input_ids"] = enc["input_ids"]
                case["assistant_masks"] = enc["assistant_masks"]
            cases.append(case)
        rows.append({"name": name, "template": template, "cases": cases})
    with open(out, "w") as f:
        json.dump(rows, f, indent=1, ensure_ascii=False)


def write_model(repo, out):
    tok = Tokenizer.from_file(os.path.join(repo, "data", "fortunes", "tokenizer.json"))
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False)
                            for t in ("<|im_start|>", "<|im_end|>")])
    eot = tok.token_to_id("<|endoftext|>")
    tok.post_processor = processors.TemplateProcessing(
        single="<|endoftext|> $A", pair="<|endoftext|> $A $B",
        special_tokens=[("<|endoftext|>", eot)])
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|endoftext|>",
                   "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                   "model_max_length": 128, "chat_template": TEMPLATE}, f, indent=2, sort_keys=True)
    torch.manual_seed(1234)
    cfg = LlamaConfig(vocab_size=tok.get_vocab_size(), hidden_size=16, intermediate_size=32,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=128, tie_word_embeddings=True,
                      bos_token_id=eot, eos_token_id=eot, pad_token_id=eot)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    model.save_pretrained(out)


def records(repo, layout, split, n):
    src = "messages" if layout in ("conv-prompt-completion", "messages-assistant") else layout
    # Two turns per conversation in messages-assistant: twice the records.
    take = 2 * n if layout == "messages-assistant" else n
    with open(os.path.join(repo, "data", "fortune-sft", src, f"{split}.jsonl")) as f:
        rows = [json.loads(line) for _, line in zip(range(take), f)]
    if layout == "conv-prompt-completion":
        rows = [{"prompt": r["messages"][:1], "completion": r["messages"][1:]} for r in rows]
    if layout == "messages-assistant":
        # With TRL's tools column (JSON text), which the template renders.
        rows = [{"messages": a["messages"] + b["messages"], "tools": json.dumps(TOOLS)}
                for a, b in zip(rows[::2], rows[1::2])]
    return rows


def run(model_dir, layout_dir, train, val, max_length=MAX_LENGTH, **extra):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp, max_length=max_length, per_device_train_batch_size=4 * len(train),
            per_device_eval_batch_size=4 * len(val), max_steps=STEPS, learning_rate=LR,
            lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9,
            adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0, optim="adamw_torch",
            logging_steps=1, eval_strategy="steps", eval_steps=1, save_strategy="no",
            report_to=[], bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True,
            seed=0, shuffle_dataset=False, **extra)
        trainer = SFTTrainer(model=model, args=args, processing_class=tokenizer,
                             train_dataset=Dataset.from_list(train),
                             eval_dataset=Dataset.from_list(val))
        keep = ("input_ids", "labels", "seq_lengths")
        prepared = {
            split: [{k: e[k] for k in keep if k in e} for e in ds]
            for split, ds in (("train", trainer.train_dataset), ("validation", trainer.eval_dataset))
        }
        # Every example (or packed row: splitting may make more of them) in the one batch of a
        # step and of an evaluation.
        assert len(prepared["train"]) <= 4 * len(train)
        assert len(prepared["validation"]) <= 4 * len(val)
        first = trainer.evaluate()
        trainer.train()
        evals = [first] + [r for r in trainer.state.log_history if "eval_loss" in r]
        # The loss of each step's batch before its update (logging_steps=1).
        train_losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    assert len(evals) == STEPS + 1, evals
    assert len(train_losses) == STEPS, train_losses
    losses = [e["eval_loss"] for e in evals]
    with open(os.path.join(layout_dir, "expected.json"), "w") as f:
        json.dump({**prepared, "eval_loss": losses,
                   "eval_mean_token_accuracy": [e["eval_mean_token_accuracy"] for e in evals],
                   "max_length": max_length, "steps": STEPS, "lr": LR,
                   "packing": extra.get("packing_strategy") if extra.get("packing") else None,
                   "loss_type": extra.get("loss_type", "nll"),
                   "truncation_mode": extra.get("truncation_mode", "keep_start"),
                   "train_loss": train_losses}, f)
    return prepared, losses


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "sft"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    model_dir = os.path.join(args.out, "model")
    write_model(repo, model_dir)
    write_templates(model_dir, os.path.join(args.out, "templates.json"))
    gen_file = os.path.join(args.out, "generation.jinja")
    with open(gen_file, "w") as f:
        f.write(GEN_TEMPLATE)
    packed = {
        "prompt-completion-packed": ("prompt-completion", dict(packing=True, packing_strategy="bfd")),
        "text-packed-split": ("text", dict(packing=True, packing_strategy="bfd_split", max_length=48)),
        "messages-packed-wrapped": ("messages", dict(packing=True, packing_strategy="wrapped")),
        "prompt-completion-dft": ("prompt-completion", dict(loss_type="dft")),
        # Long examples keep their end: the prompt's start is cut, the completion survives.
        "prompt-completion-keep-end": ("prompt-completion",
                                       dict(truncation_mode="keep_end", max_length=20)),
    }
    for layout in ("text", "prompt-completion", "messages", "conv-prompt-completion",
                   "messages-assistant", *packed):
        d = os.path.join(args.out, layout)
        os.makedirs(d)
        source, extra = packed.get(layout, (layout, {}))
        train, val = records(repo, source, "train", N_TRAIN), records(repo, source, "validation", N_VAL)
        for name, rows in (("train", train), ("validation", val)):
            with open(os.path.join(d, f"{name}.jsonl"), "w") as f:
                for r in rows:
                    f.write(json.dumps(r, ensure_ascii=False) + "\n")
        if layout == "messages-assistant":
            # Two turns and the tools' system block: the model's whole context.
            extra = dict(chat_template_path=gen_file, assistant_only_loss=True, max_length=128)
        prepared, losses = run(model_dir, d, train, val, **extra)
        kept = {k: len(v) for k, v in prepared.items()}
        print(f"{layout}: kept {kept} of {N_TRAIN}/{N_VAL}; eval_loss {losses}")


if __name__ == "__main__":
    main()
