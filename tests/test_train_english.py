"""The English recipe of fastdiff.training: prose from HTML documentation, a pretrained WordPiece
tokenizer pruned to the corpus, an encoder without an MLM head fine-tuned with its vocabulary cut,
and the provenance the export records. A tiny random BERT and hand-written pages stand in for
all-MiniLM-L6-v2 and Debian's packages."""
import json
import string

import pytest
import torch

pytest.importorskip("tokenizers")
pytest.importorskip("safetensors")

from fastdiff.training import prose  # noqa: E402
from fastdiff.training.config import TrainConfig  # noqa: E402
from fastdiff.training.data import PreparedData, prepare  # noqa: E402
from fastdiff.training.export import export  # noqa: E402
from fastdiff.training.loop import train  # noqa: E402
from fastdiff.training.models import keep_vocabulary  # noqa: E402

WORDS = ("the system reads its configuration when it starts every service is checked before runs a package "
         "can depend on other packages manager installs them in right order backups should be tested "
         "regularly because copy that cannot restored worth nothing kernel file users").split()
PAGE = """<html><body><div class="section">
<p>The system reads its configuration when it starts. Every service is checked before it runs.</p>
<div class="para">A package can depend on other packages. Run <code class="command">apt install</code> now.
The manager installs them in the right order.<span class="indexterm">hidden index term</span></div>
<pre>for x in range(3): print(x)</pre>
<p>Backups should be tested regularly, because a copy that cannot be restored is worth nothing.</p>
<p>Set x = 1 to enable it. Call os.path.join to build paths. Too short.</p>
</div></body></html>"""


def test_html_paragraphs_keep_prose_sentences_only():
    assert prose.html_paragraphs(PAGE) == [
        "The system reads its configuration when it starts. Every service is checked before it runs.",
        "A package can depend on other packages. The manager installs them in the right order.",
        "Backups should be tested regularly, because a copy that cannot be restored is worth nothing.",
    ]
    assert prose.html_paragraphs("<p>Only code: <tt>x</tt> here is a sentence.</p>") == []
    assert prose.html_paragraphs("<p>No terminal stop at the end of this one</p>") == []


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    """A documentation tree with the packages of prose.DEBIAN_DOCS, other languages and an index."""
    root = tmp_path_factory.mktemp("docs")
    for number, package in enumerate(prose.DEBIAN_DOCS):
        for page in range(3):
            path = root / package / "usr/share/doc" / f"page{page}.html"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(PAGE.replace("system", ["system", "kernel", "manager", "service"][number]))
    (root / "debian-handbook/html/de-DE").mkdir(parents=True)
    (root / "debian-handbook/html/de-DE/apt.html").write_text("<p>Das System liest seine Konfiguration.</p>")
    (root / "linux-doc-6.1/genindex.html").write_text(PAGE)
    (root / "linux-doc-6.1/translations").mkdir()
    (root / "linux-doc-6.1/translations/it.html").write_text(PAGE)
    return root


def test_html_files_are_the_english_pages_of_every_package(docs, tmp_path):
    files = prose.html_files(docs)
    assert len(files) == 3 * len(prose.DEBIAN_DOCS) and files == sorted(files)
    assert not any("de-DE" in f or "genindex" in f or "translations" in f for f in files)
    with pytest.raises(ValueError, match="lacks the unpacked packages"):
        prose.html_files(tmp_path)


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A tiny uncased WordPiece tokenizer and a random BertModel saved without an MLM head, as the
    sentence-transformers directory of all-MiniLM-L6-v2 is."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    directory = tmp_path_factory.mktemp("base")
    characters = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + characters + ["##" + c for c in characters]
    vocab += sorted(set(WORDS)) + ["unused", "##ing", "##s", "zebra"]
    ids = {token: i for i, token in enumerate(vocab)}
    tokenizer = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.enable_padding(length=40)  # as sentence-transformers saves all-MiniLM-L6-v2's
    tokenizer.enable_truncation(40)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(directory)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64), add_pooling_layer=False
              ).save_pretrained(directory)
    (directory / "provenance.json").write_text(json.dumps({"name": "tiny-bert", "licence": "Apache-2.0"}))
    return directory, vocab


def test_pruned_tokenizer_encodes_the_corpus_as_the_base_does(base_model, tmp_path):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    directory, vocab = base_model
    texts = prose.html_paragraphs(PAGE)
    size = 5 + 2 * len(set(string.ascii_lowercase + string.digits + string.punctuation)) + 20
    tokenizer, base_ids = prose.prune_tokenizer(directory, texts, size, tmp_path)
    base = AutoTokenizer.from_pretrained(str(directory))
    assert len(tokenizer) == len(base_ids) == size and base_ids == sorted(base_ids)
    assert [tokenizer.convert_ids_to_tokens(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert "zebra" not in tokenizer.get_vocab() and "unused" not in tokenizer.get_vocab()
    tokenizer.save_pretrained(tmp_path / "saved")
    raw = Tokenizer.from_file(str(tmp_path / "saved" / "tokenizer.json"))  # the file alone, as any client reads it
    assert raw.padding is None and raw.truncation is None
    assert len(raw.encode("the system").ids) == 3
    for text in texts:
        pruned = tokenizer(text)["input_ids"]
        assert pruned[0] == tokenizer.cls_token_id and tokenizer.sep_token_id not in pruned  # ready to continue
        # a word the pruned vocabulary lost still splits into its letters, never [UNK]
        assert tokenizer.unk_token_id not in pruned
        assert tokenizer.decode(pruned, skip_special_tokens=True) == base.decode(base(text)["input_ids"],
                                                                                   skip_special_tokens=True)
    kept_word = next(w for w in WORDS if w in tokenizer.get_vocab())
    assert base_ids[tokenizer.convert_tokens_to_ids(kept_word)] == vocab.index(kept_word)
    with pytest.raises(ValueError, match="vocab_size"):
        prose.prune_tokenizer(directory, texts, 3, tmp_path)


def test_keep_vocabulary_keeps_the_rows_and_the_tie():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=32)).eval()
    with torch.no_grad():
        model.cls.predictions.bias.normal_()
    ids = torch.tensor([[2, 7, 9, 3]])
    keep = [0, 2, 3, 7, 9, 11, 40]
    with torch.no_grad():
        full = model(input_ids=ids).logits
        keep_vocabulary(model, keep)
        cut = model(input_ids=torch.tensor([[keep.index(i) for i in ids[0].tolist()]])).logits
    torch.testing.assert_close(cut, full[..., keep])
    assert model.config.vocab_size == 7 and model.get_output_embeddings().weight is model.get_input_embeddings().weight
    with pytest.raises(ValueError, match="base_token_ids"):
        keep_vocabulary(model, [0, 99])


def test_english_recipe_prepares_fine_tunes_and_exports(docs, base_model, tmp_path):
    from transformers import AutoModelForMaskedLM

    directory, _ = base_model
    size = 5 + 2 * len(set(string.ascii_lowercase + string.digits + string.punctuation)) + 20
    manifest = prepare(tmp_path / "data", source=docs, tokenizer_dir=directory, vocab_size=size,
                       corpus_kind="english", heldout_percent=20)
    assert manifest["corpus_kind"] == "english" and manifest["packages"] == prose.DEBIAN_DOCS
    assert len(manifest["base_token_ids"]) == size and manifest["vocab_size"] == size
    data = PreparedData.load(tmp_path / "data")
    paragraphs = int((data.train.ids == data.tokenizer.eos_token_id).sum())
    assert paragraphs == 3 * len(manifest["train_files"])  # one EOS per paragraph
    assert len(data.train.line_starts) == paragraphs  # windows start at paragraph starts
    config = TrainConfig(data=str(tmp_path / "data"), output_dir=str(tmp_path / "run"), init_from=str(directory),
                         seq_length=24, batch_size=4, steps=3, warmup_steps=1, eval_every=3, eval_windows=4,
                         save_every=3, threads=1, progress=False, prefix_length=(0, 4))
    result = train(config)
    assert result["finished"] and result["loss"] is not None and result["loss"] == result["loss"]
    info = export(tmp_path / "run", tmp_path / "model")
    assert info["base_model"]["name"] == "tiny-bert" and info["base_model"]["licence"] == "Apache-2.0"
    assert info["corpus"]["packages"] == prose.DEBIAN_DOCS and info["steps_done"] == 3
    assert info["settings"]["init_from"] == str(directory) and "hidden_size" not in info["settings"]
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "model", local_files_only=True)
    assert model.config.vocab_size == size
    assert model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    with pytest.raises(ValueError, match="corpus_kind"):
        prepare(tmp_path / "bad", corpus_kind="latin")
    with pytest.raises(ValueError, match="needs source"):
        prepare(tmp_path / "bad", corpus_kind="english")
