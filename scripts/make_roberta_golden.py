#!/usr/bin/env python3
"""Write tests/golden/roberta_tiny/: a tiny RobertaForMaskedLM, RobertaForSequenceClassification,
RobertaForTokenClassification, RobertaForQuestionAnswering and RobertaModel (with its pooler) made
by transformers itself, plus padded inputs and the outputs transformers computed on them, and a
small byte-level BPE tokenizer with what transformers' RobertaTokenizerFast returns for it, for the
Rust parity tests. CI has no PyTorch; these files are committed.

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_roberta_golden.py [--out tests/golden/roberta_tiny]

Files written:
    mlm/{config.json,model.safetensors}   RobertaForMaskedLM.save_pretrained (safetensors; the
                                          decoder is tied to the word embeddings, not saved)
    cls/{config.json,model.safetensors}   RobertaForSequenceClassification, 3 labels
    tok/{config.json,model.safetensors}   RobertaForTokenClassification, 5 IOB2 tags
    qa/{config.json,model.safetensors}    RobertaForQuestionAnswering (no labels, no pooler)
    enc/{config.json,model.safetensors}   RobertaModel with its pooler (add_pooling_layer=True)
    inputs.json     input_ids (<s>=0 first; row 0 a pair <s> A </s></s> B </s>, rows 1 and 2
                    single sentences ending in </s> and padded with <pad>=1), attention_mask
                    (zeros = padding), position_ids (as RobertaEmbeddings computes them from
                    input_ids: pad + cumsum(ids != pad) * (ids != pad), so 2.. for tokens and 1
                    for padding), mlm_labels (-100 except at the <mask>=4 positions),
                    cls_labels, tok_labels (-100 at <s>, </s>, padding and unlabelled tokens),
                    qa_start_positions, qa_end_positions (one start at T and one end beyond it,
                    which transformers clamps to T and ignores). No token_type_ids: RoBERTa's
                    tokenizer returns none and the models are called without them (zeros).
    expected.safetensors   float32 mlm_logits [3,12,100], mlm_loss [], hidden [3,12,32] (the
                           MLM model's encoder last hidden state), cls_logits [3,3], cls_loss [],
                           tok_logits [3,12,5], tok_loss [], qa_start_logits [3,12],
                           qa_end_logits [3,12], qa_loss [], enc_hidden [3,12,32],
                           enc_pooled [3,32] (RobertaModel's pooler_output)
    tokenizer/tokenizer.json   a byte-level BPE tokenizer built like RoBERTa's (BPE, ByteLevel
                               pre-tokenizer without prefix space, ByteLevel decoder,
                               RobertaProcessing), specials <s>=0 <pad>=1 </s>=2 <unk>=3
                               <mask>=4 (lstrip), trained here on SENTENCES (vocab 300),
                               written by RobertaTokenizerFast(tokenizer_object=...)
                               .save_pretrained (checked equal to the trained tokenizer's JSON)
    tokenizer/tokenizer_config.json   written by the same save_pretrained (transformers 5 writes
                               no special_tokens_map.json)
    tokenizer/expected.json    what RobertaTokenizerFast.from_pretrained(tokenizer/) returns: a
                               single text, a text pair (input_ids, attention_mask,
                               token_type_ids, offsets, tokens), pre-split words with
                               is_split_into_words=True (loaded with add_prefix_space=True;
                               plus word_ids) and run_qa's windowed question/context call
                               (truncation="only_second", max_length 16, stride 4: each window's
                               input_ids, attention_mask, offset_mapping, sequence_ids,
                               tokens)

Each model is drawn after the ones before it, so adding one leaves the others' files as they were.
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (RobertaConfig, RobertaForMaskedLM, RobertaForQuestionAnswering,
                          RobertaForSequenceClassification, RobertaForTokenClassification, RobertaModel,
                          RobertaTokenizerFast)
from transformers.models.roberta.modeling_roberta import RobertaEmbeddings

from golden_common import SEED, B, T, V, randomise, write_tokenizer_expected
BOS, PAD, EOS, MASK = 0, 1, 2, 4
TOK_VOCAB = 300

# The tokenizer's training text: fixed, so that the trained merges are the same on every run.
SENTENCES = [
    "The cat sat on the mat.",
    "A dog runs in the park every morning.",
    "Anna lives in Berlin and works in Paris.",
    "Where does Anna live?",
    "The capital of France is Paris.",
    "How old are you?",
    "I am six years old.",
    "The weather is nice today, isn't it?",
    "She bought three apples and two oranges.",
    "We walked along the river until sunset.",
    "The train to London leaves at nine o'clock.",
    "My brother plays the guitar very well.",
    "Reading books is a good way to learn.",
    "The museum opens on Monday and closes on Friday.",
    "He said that the meeting was cancelled.",
    "Birds sing in the trees near our house.",
    "The children played football after school.",
    "Please close the window, it is cold.",
    "Our teacher explained the lesson twice.",
    "The river flows from the mountains to the sea.",
    "They visited Rome, Madrid and Lisbon last summer.",
    "The quick brown fox jumps over the lazy dog.",
    "Coffee tastes better with a little milk.",
    "The library has thousands of old books.",
    "Peter and Mary are getting married in June.",
    "It rained all night, so the streets were wet.",
    "The shop sells fresh bread and cheese.",
    "Tokyo is the largest city in Japan.",
    "Water boils at one hundred degrees.",
    "The film was longer than we expected.",
    "Can you tell me the way to the station?",
    "The garden is full of roses and tulips.",
    "Mount Everest is the highest mountain in the world.",
    "The students finished their exams on Tuesday.",
    "Music makes people happy.",
    "The doctor told him to rest for a week.",
]


def position_ids_of(ids):
    # RoBERTa's (fairseq's) positions: pad + 1, pad + 2, ... over non-padding tokens, pad at padding.
    not_pad = (ids != PAD).long()
    return torch.cumsum(not_pad, dim=1) * not_pad + PAD


def make_models(out_dir):
    common = dict(
        vocab_size=V,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=48,
        hidden_act="gelu",
        max_position_embeddings=16,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        pad_token_id=PAD,
        bos_token_id=BOS,
        eos_token_id=EOS,
    )
    torch.manual_seed(SEED)
    mlm = RobertaForMaskedLM(RobertaConfig(**common))
    randomise(mlm)
    # The decoder is tied to the word embeddings and its bias is lm_head.bias: neither is saved.
    assert mlm.lm_head.decoder.weight.data_ptr() == mlm.roberta.embeddings.word_embeddings.weight.data_ptr()
    assert mlm.lm_head.decoder.bias.data_ptr() == mlm.lm_head.bias.data_ptr()
    labels = ["negative", "neutral", "positive"]
    cls = RobertaForSequenceClassification(RobertaConfig(
        **common,
        num_labels=3,
        id2label={i: n for i, n in enumerate(labels)},
        label2id={n: i for i, n in enumerate(labels)},
    ))
    randomise(cls)
    tags = ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
    tok_model = RobertaForTokenClassification(RobertaConfig(
        **common,
        num_labels=len(tags),
        id2label={i: n for i, n in enumerate(tags)},
        label2id={n: i for i, n in enumerate(tags)},
    ))
    randomise(tok_model)
    # transformers' default num_labels (2) sizes qa_outputs.
    qa_model = RobertaForQuestionAnswering(RobertaConfig(**common))
    randomise(qa_model)
    enc = RobertaModel(RobertaConfig(**common), add_pooling_layer=True)
    randomise(enc)
    for model in (mlm, cls, tok_model, qa_model, enc):
        model.eval()

    g = torch.Generator().manual_seed(4321)
    ids = torch.randint(5, V, (B, T), generator=g)
    ids[:, 0] = BOS
    mask = torch.ones(B, T, dtype=torch.long)
    # Row 0: a pair filling the row, <s> A </s></s> B </s> (A at 1..4, B at 7..10).
    ids[0, 5] = EOS
    ids[0, 6] = EOS
    ids[0, 11] = EOS
    # Rows 1 and 2: single sentences padded at the end.
    for row, length in [(1, 8), (2, 5)]:
        ids[row, length - 1] = EOS
        ids[row, length:] = PAD
        mask[row, length:] = 0
    mlm_labels = torch.full((B, T), -100, dtype=torch.long)
    for r, c in [(0, 2), (0, 9), (1, 3), (1, 5), (2, 1)]:
        mlm_labels[r, c] = ids[r, c]
        ids[r, c] = MASK
    cls_labels = torch.tensor([2, 0, 1])
    # Tags at some real positions only, as run_ner labels first sub-tokens: never at <s>, </s> or
    # padding.
    tok_labels = torch.full((B, T), -100, dtype=torch.long)
    for r, c, tag in [(0, 1, 1), (0, 2, 3), (0, 4, 4), (0, 8, 0), (0, 9, 2), (1, 1, 4), (1, 2, 0),
                      (1, 6, 4), (2, 2, 1), (2, 3, 4)]:
        assert ids[r, c] not in (BOS, EOS, PAD)
        tok_labels[r, c] = tag
    # Answer spans: row 0 in the second segment, row 1 in its sentence. Row 2's start is T and
    # row 1's end is beyond T: clamped to T and ignored.
    qa_start = torch.tensor([8, 2, T])
    qa_end = torch.tensor([9, 40, 3])

    pos = position_ids_of(ids)
    assert torch.equal(pos, RobertaEmbeddings.create_position_ids_from_input_ids(ids, PAD))
    assert torch.equal(pos, mlm.roberta.embeddings.create_position_ids_from_input_ids(ids, PAD))
    assert int(pos.max()) < common["max_position_embeddings"]

    with torch.no_grad():
        out = mlm(input_ids=ids, attention_mask=mask, labels=mlm_labels)
        hidden = mlm.roberta(input_ids=ids, attention_mask=mask).last_hidden_state
        # The same with the positions passed in: the model computes the ones recorded.
        hidden_pos = mlm.roberta(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
        assert torch.equal(hidden, hidden_pos)
        cout = cls(input_ids=ids, attention_mask=mask, labels=cls_labels)
        tout = tok_model(input_ids=ids, attention_mask=mask, labels=tok_labels)
        qout = qa_model(input_ids=ids, attention_mask=mask, start_positions=qa_start, end_positions=qa_end)
        eout = enc(input_ids=ids, attention_mask=mask)

    for sub, model in [("mlm", mlm), ("cls", cls), ("tok", tok_model), ("qa", qa_model), ("enc", enc)]:
        model.save_pretrained(os.path.join(out_dir, sub), safe_serialization=True)
    with open(os.path.join(out_dir, "inputs.json"), "w") as f:
        json.dump(
            {
                "input_ids": ids.tolist(),
                "attention_mask": mask.tolist(),
                "position_ids": pos.tolist(),
                "mlm_labels": mlm_labels.tolist(),
                "cls_labels": cls_labels.tolist(),
                "tok_labels": tok_labels.tolist(),
                "qa_start_positions": qa_start.tolist(),
                "qa_end_positions": qa_end.tolist(),
            },
            f,
        )
    save_file(
        {
            "mlm_logits": out.logits.float().contiguous(),
            "mlm_loss": out.loss.float().reshape(()),
            "hidden": hidden.float().contiguous(),
            "cls_logits": cout.logits.float().contiguous(),
            "cls_loss": cout.loss.float().reshape(()),
            "tok_logits": tout.logits.float().contiguous(),
            "tok_loss": tout.loss.float().reshape(()),
            "qa_start_logits": qout.start_logits.float().contiguous(),
            "qa_end_logits": qout.end_logits.float().contiguous(),
            "qa_loss": qout.loss.float().reshape(()),
            "enc_hidden": eout.last_hidden_state.float().contiguous(),
            "enc_pooled": eout.pooler_output.float().contiguous(),
        },
        os.path.join(out_dir, "expected.safetensors"),
        metadata={"format": "pt"},
    )
    print(f"wrote {out_dir}: mlm_loss {out.loss.item():.6f} cls_loss {cout.loss.item():.6f} "
          f"tok_loss {tout.loss.item():.6f} qa_loss {qout.loss.item():.6f}")


def build_tokenizer():
    specials = [
        AddedToken("<s>", special=True, normalized=False),
        AddedToken("<pad>", special=True, normalized=False),
        AddedToken("</s>", special=True, normalized=False),
        AddedToken("<unk>", special=True, normalized=False),
        AddedToken("<mask>", lstrip=True, special=True, normalized=False),
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TOK_VOCAB,
        min_frequency=2,
        show_progress=False,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    tok.post_processor = processors.RobertaProcessing(
        ("</s>", EOS), ("<s>", BOS), trim_offsets=True, add_prefix_space=False)
    for i, t in enumerate(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]):
        assert tok.token_to_id(t) == i, t
    return tok


def make_tokenizer(out_dir):
    tok_dir = os.path.join(out_dir, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    tok = build_tokenizer()
    # As real checkpoints ship it: tokenizer.json and transformers' tokenizer_config.json.
    RobertaTokenizerFast(tokenizer_object=tok).save_pretrained(tok_dir)
    with open(os.path.join(tok_dir, "tokenizer.json")) as f:
        assert json.load(f) == json.loads(tok.to_str()), "save_pretrained changed the tokenizer"
    hf = RobertaTokenizerFast.from_pretrained(tok_dir)
    hf_prefix = RobertaTokenizerFast.from_pretrained(tok_dir, add_prefix_space=True)

    single = "The capital of France is <mask>."
    pair = ("How old is Anna?", "She is six years old.")
    words = ["Anna", "lives", "in", "Berlin", "."]
    # Short enough for 8 context tokens a window (max_length 16 less 4 question tokens and 4
    # specials), so that stride 4 gives 4 windows.
    question = "Who?"
    context = "Anna lives in Berlin and Paris."
    common = dict(return_token_type_ids=True, return_offsets_mapping=True)
    e_single = hf(single, **common)
    e_pair = hf(*pair, **common)
    e_words = hf_prefix(words, is_split_into_words=True, **common)
    # run_qa's prepare_*_features call (questions lstripped, question first), without padding.
    e_qa = hf(question.lstrip(), context, truncation="only_second", max_length=16, stride=4,
              return_overflowing_tokens=True, return_offsets_mapping=True)

    # The tokenizers library on its own gives the same ids and offsets.
    raw = Tokenizer.from_file(os.path.join(tok_dir, "tokenizer.json"))
    for text, e in [((single,), e_single), (pair, e_pair)]:
        r = raw.encode(*text)
        assert r.ids == e["input_ids"] and [tuple(o) for o in r.offsets] == [tuple(o) for o in e["offset_mapping"]]

    raw.enable_truncation(16, stride=4, strategy="only_second")
    r = raw.encode(question.lstrip(), context)
    assert [w.ids for w in [r] + r.overflowing] == e_qa["input_ids"]
    raw.no_truncation()

    cases = dict(single=single, pair=pair, words=words, add_prefix_space=True, question=question,
                 context=context)
    n = write_tokenizer_expected(os.path.join(tok_dir, "expected.json"), hf.vocab_size, cases,
                                 (e_single, e_pair, e_words, e_qa))
    print(f"wrote {tok_dir}: vocab {hf.vocab_size}, {n} qa windows")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "roberta_tiny"))
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    make_models(args.out)
    make_tokenizer(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
