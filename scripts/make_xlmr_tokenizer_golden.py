#!/usr/bin/env python3
"""Write tests/golden/xlmr_tokenizer/: a small SentencePiece-style Unigram tokenizer built like
xlm-roberta-base's tokenizer.json, and what transformers' XLMRobertaTokenizerFast returns for
it, for the Rust tokenizer parity tests. CI has no Python; these files are committed.

Run with the reference venv (scripts/ref_env.sh):
    .venv-ref/bin/python scripts/make_xlmr_tokenizer_golden.py [--out tests/golden/xlmr_tokenizer]

How it is made:
    1. A tokenizer laid out as the hub's xlm-roberta-base tokenizer.json: a Unigram model trained
       by UnigramTrainer on SENTENCES (specials <s>=0 <pad>=1 </s>=2 <unk>=3, unk_id 3; asked
       for 399 pieces, it stops at 388), its pieces put in a fixed order with scores that do not
       change between runs (canonical_pieces), then <mask> appended as the last piece (score
       0.0) and added as a special token with lstrip, as XLM-R has it; normalizer NFKC then
       Replace(" {2,}" -> " ") (the hub file has SentencePiece's Precompiled nmt_nfkc charsmap
       in place of NFKC), pre-tokenizer and decoder Metaspace("▁", prepend_scheme="always"),
       post-processor TemplateProcessing "<s> $A </s>" / "<s> $A </s> </s> $B </s>".
    2. XLMRobertaTokenizerFast(tokenizer_object=...) and (tokenizer_file=...) keep that pipeline,
       and save_pretrained writes it back unchanged (checked). XLMRobertaTokenizerFast
       .from_pretrained (what AutoTokenizer and the example scripts use) does not: transformers 5
       rebuilds an XLM-R tokenizer from the file's vocabulary and post-processor only, with its
       own pre-tokenizer Sequence[WhitespaceSplit, Metaspace("▁", always)], Metaspace decoder
       and no normalizer (only a Precompiled charsmap would be kept), and its save_pretrained
       writes that rebuilt pipeline. The ids agree on the texts here, the offsets do not: the
       rebuilt pipeline starts a word's "▁x" piece at the word, the file's own pipeline at the
       space before it (checked).
    3. The committed tokenizer.json is transformers' rewrite (from_pretrained, then
       save_pretrained; checked to be a fixed point), so that the tokenizers library reading it
       gives exactly what transformers gives, offsets included (checked).

Files written:
    tokenizer.json          transformers' rewrite (step 3) of the tokenizer of step 1
    tokenizer_config.json   written by the same save_pretrained (tokenizer_class
                            XLMRobertaTokenizer, add_prefix_space true, and the is_local and
                            local_files_only that from_pretrained passed in; no
                            special_tokens_map.json)
    expected.json           what XLMRobertaTokenizerFast.from_pretrained(out/) returns, in
                            tests/golden/roberta_tiny/tokenizer/expected.json's layout: a single
                            text, a text pair (input_ids, attention_mask, token_type_ids,
                            offsets, tokens), pre-split words with is_split_into_words=True
                            (loaded as it is: every word gets the Metaspace prefix; plus
                            word_ids) and run_qa's windowed question/context call
                            (truncation="only_second", max_length 16, stride 4: each window's
                            input_ids, attention_mask, offset_mapping, sequence_ids, tokens)
"""
import argparse
import json
import os

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import XLMRobertaTokenizerFast

from golden_common import write_tokenizer_expected

BOS, PAD, EOS, UNK = 0, 1, 2, 3
TOK_VOCAB = 400

# The tokenizer's training text: fixed, so that the trained pieces and scores are the same on
# every run.
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
    "The train to London leaves at 9:15, not 9:50.",
    "My brother plays the guitar very well.",
    "Reading books is a good way to learn.",
    "The museum opens on Monday and closes on Friday.",
    "He said that the meeting was cancelled.",
    "Birds sing in the trees near our house.",
    "The children played football after school.",
    "Please close the window; it is cold!",
    "Our teacher explained the lesson twice.",
    "The river flows from the mountains to the sea.",
    "They visited Rome, Madrid and Lisbon in 2019.",
    "The quick brown fox jumps over the lazy dog.",
    "Coffee tastes better with a little milk.",
    "The library has 12,500 old books.",
    "Peter and Mary are getting married in June.",
    "It rained all night, so the streets were wet.",
    "The shop sells fresh bread and cheese.",
    "Tokyo is the largest city in Japan.",
    "Water boils at 100 degrees (212 in Fahrenheit).",
    "The film was longer than we expected.",
    "Can you tell me the way to the station?",
    "The garden is full of roses and tulips.",
    "Mount Everest is 8,849 metres high.",
    "The students finished their exams on Tuesday.",
    "Music makes people happy.",
    "The doctor told him to rest for a week.",
    "Room 42 is on the third floor.",
    "She answered: \"Yes, of course.\"",
    "Anna was born in Berlin on 3 May 1990.",
    "The recipe needs 2 eggs, 250 grams of flour and some sugar.",
    "Who wrote this letter, and when?",
    "Paris and Berlin are connected by a fast train.",
    "The price went up by 15% last year.",
    "Our flight leaves from gate 7 at 6:30.",
    "Everyone laughed at the old joke again.",
    "The answer is in the second paragraph.",
    "Questions and answers help us read better.",
    "Anna and her brother moved to Paris in 2021.",
    "The bakery on Main Street opens at 7 o'clock.",
    "Maria drinks green tea every afternoon.",
    "Is the museum closed on public holidays?",
    "The company hired 35 new engineers in March.",
    "My grandmother grows tomatoes, beans and potatoes.",
    "The bridge was built more than 200 years ago.",
    "Could you open the door, please?",
    "The concert starts at 8 pm and ends at 11 pm.",
    "Heavy snow closed the mountain roads for two days.",
    "He reads the newspaper before breakfast.",
    "The team won the final match 3-1.",
    "Which planet is closest to the sun?",
    "The children built a sandcastle on the beach.",
    "Our neighbours have a black cat and a white rabbit.",
    "The bus was late again this morning.",
    "She writes short stories about her hometown.",
    "The hospital is next to the old church.",
    "Add salt, pepper and a little olive oil.",
    "The population of the town is about 45,000.",
    "Why did the lights go out last night?",
    "The painting was sold for 2 million euros.",
    "Thomas repairs bicycles in a small workshop.",
    "Autumn leaves turn yellow, orange and red.",
    "The exam lasts three hours and a half.",
]

SPECIALS = ["<s>", "<pad>", "</s>", "<unk>"]


def canonical_pieces(vocab):
    """The trained pieces in an order and with scores that do not change from run to run.

    UnigramTrainer's pieces are the same on every run, but not all of their scores: it walks
    Rust HashMaps (randomly seeded per process), so the EM sums differ in the last bits, and the
    characters it must keep but had pruned get min_score, min_score + 1e-4, min_score + 2e-4,
    ... in hash order, with ties in the final sort broken the same way. So: those characters
    get the same scores in the order of their text, every score is rounded to 6 decimals, and
    the pieces after the four specials are sorted by score (highest first), then text.
    """
    specials, pieces = vocab[:len(SPECIALS)], vocab[len(SPECIALS):]
    assert [p for p, _ in specials] == SPECIALS and all(s == 0.0 for _, s in specials)
    lo = min(s for _, s in pieces)
    steps = {p: (s - lo) / 1e-4 for p, s in pieces}
    tail = sorted(p for p, s in pieces if len(p) == 1 and abs(steps[p] - round(steps[p])) < 1e-6
                  and round(steps[p]) < 1000)
    ks = sorted(round(steps[p]) for p in tail)
    assert ks[-1] <= len(tail) and set(ks) == set(range(ks[-1] + 1)), ks
    score = dict(pieces)
    for p, s in zip(tail, sorted(score[p] for p in tail)):
        score[p] = s
    pieces = sorted(((p, round(s, 6)) for p, s in score.items()), key=lambda ps: (-ps[1], ps[0]))
    return [list(ps) for ps in specials] + [list(ps) for ps in pieces]


def build_tokenizer():
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=TOK_VOCAB - 1,
        show_progress=False,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIALS],
        unk_token="<unk>",
    )
    tok.train_from_iterator(SENTENCES, trainer=trainer)
    spec = json.loads(tok.to_str())
    spec["model"]["vocab"] = canonical_pieces(spec["model"]["vocab"])
    # <mask> is the model's last piece (score 0.0) and an added special token that takes the
    # space before it, as in xlm-roberta-base (id 250001 there).
    spec["model"]["vocab"].append(["<mask>", 0.0])
    tok = Tokenizer.from_str(json.dumps(spec))
    tok.add_special_tokens([AddedToken("<mask>", lstrip=True, special=True, normalized=False)])
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", BOS), ("</s>", EOS)],
    )
    for i, t in enumerate(SPECIALS):
        assert tok.token_to_id(t) == i, t
    assert tok.token_to_id("<mask>") == tok.get_vocab_size() - 1
    assert json.loads(tok.to_str())["model"]["unk_id"] == UNK
    return tok


def load_json(path):
    with open(path) as f:
        return json.load(f)


def make_tokenizer(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    tok = build_tokenizer()
    built = json.loads(tok.to_str())
    single = "The capital of France is <mask>."
    # "€" is not in the training text: <unk>.
    pair = ("How old is Anna?", "She paid 5 € in Paris in 2021.")
    words = ["Anna", "lives", "in", "Berlin", "."]
    # Short enough for 9 context tokens a window (max_length 16 less 3 question tokens and 4
    # specials), so that stride 4 gives 4 windows.
    question = "Who?"
    context = "Anna lives in Berlin and Paris since 2019."
    common = dict(return_token_type_ids=True, return_offsets_mapping=True)

    # Step 2: the constructor keeps the file's pipeline and save_pretrained writes it unchanged.
    direct = XLMRobertaTokenizerFast(tokenizer_object=tok)
    direct.save_pretrained(out_dir)
    assert load_json(os.path.join(out_dir, "tokenizer.json")) == built, "save_pretrained changed the tokenizer"
    direct = XLMRobertaTokenizerFast(tokenizer_file=os.path.join(out_dir, "tokenizer.json"))
    # from_pretrained rebuilds it (WhitespaceSplit + Metaspace, no normalizer): same ids here,
    # other offsets.
    rebuilt = XLMRobertaTokenizerFast.from_pretrained(out_dir)
    assert rebuilt.backend_tokenizer.normalizer is None
    for text in [(single,), pair]:
        a, b = direct(*text, **common), rebuilt(*text, **common)
        assert a["input_ids"] == b["input_ids"], text
        assert a["offset_mapping"] != b["offset_mapping"], text

    # Step 3: keep transformers' rewrite; it is a fixed point of from_pretrained/save_pretrained.
    rebuilt.save_pretrained(out_dir)
    rewritten = load_json(os.path.join(out_dir, "tokenizer.json"))
    assert rewritten != built
    assert rewritten["normalizer"] is None
    assert [p["type"] for p in rewritten["pre_tokenizer"]["pretokenizers"]] == ["WhitespaceSplit", "Metaspace"]
    assert rewritten["model"] == built["model"] and rewritten["added_tokens"] == built["added_tokens"]
    assert rewritten["post_processor"] == built["post_processor"]
    hf = XLMRobertaTokenizerFast.from_pretrained(out_dir)
    hf.save_pretrained(out_dir)
    assert load_json(os.path.join(out_dir, "tokenizer.json")) == rewritten

    e_single = hf(single, **common)
    e_pair = hf(*pair, **common)
    e_words = hf(words, is_split_into_words=True, **common)
    # run_qa's prepare_*_features call (questions lstripped, question first), without padding.
    e_qa = hf(question.lstrip(), context, truncation="only_second", max_length=16, stride=4,
              return_overflowing_tokens=True, return_offsets_mapping=True)
    # The same tokenizer built from the file with tokenizer_file= gives the same.
    same = XLMRobertaTokenizerFast(tokenizer_file=os.path.join(out_dir, "tokenizer.json"))
    assert same(single, **common) == e_single and same(*pair, **common) == e_pair
    assert same(words, is_split_into_words=True, **common) == e_words

    # The tokenizers library on its own gives the same ids and offsets.
    raw = Tokenizer.from_file(os.path.join(out_dir, "tokenizer.json"))
    for r, e in [(raw.encode(single), e_single), (raw.encode(*pair), e_pair),
                 (raw.encode(words, is_pretokenized=True), e_words)]:
        assert r.ids == e["input_ids"] and r.type_ids == e["token_type_ids"]
        assert [tuple(o) for o in r.offsets] == [tuple(o) for o in e["offset_mapping"]]
        assert r.tokens == e.tokens()
    assert raw.encode(words, is_pretokenized=True).word_ids == e_words.word_ids()
    raw.enable_truncation(16, stride=4, strategy="only_second")
    r = raw.encode(question.lstrip(), context)
    assert [w.ids for w in [r] + r.overflowing] == e_qa["input_ids"]
    assert [[tuple(o) for o in w.offsets] for w in [r] + r.overflowing] == \
        [[tuple(o) for o in w] for w in e_qa["offset_mapping"]]
    raw.no_truncation()

    assert all(t == 0 for t in e_pair["token_type_ids"])
    assert UNK in e_pair["input_ids"]
    assert hf.vocab_size == len(built["model"]["vocab"]) and hf.convert_tokens_to_ids("<mask>") == hf.vocab_size - 1
    cases = dict(single=single, pair=pair, words=words, add_prefix_space=hf.add_prefix_space, question=question,
                 context=context)
    n = write_tokenizer_expected(os.path.join(out_dir, "expected.json"), hf.vocab_size, cases,
                                 (e_single, e_pair, e_words, e_qa))
    print(f"wrote {out_dir}: vocab {hf.vocab_size}, {n} qa windows")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--out", default=os.path.join(repo, "tests", "golden", "xlmr_tokenizer"))
    args = ap.parse_args()
    make_tokenizer(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
