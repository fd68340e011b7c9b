import numpy as np
import pytest

from lal_core.data import tokenizer
from lal_core.data.tokenizer import StreamDecoder, decode, encode, encode_array
from lal_core.errors import TokenizerError


def test_hello_world():
    assert encode("Hello world") == [15496, 995]
    assert decode([15496, 995]) == "Hello world"


def test_special_token_text_is_plain_text():
    assert decode(encode("<|endoftext|>")) == "<|endoftext|>"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Hello world",
        "a <|endoftext|> inside, and <|endofprompt|>",  # plain text, as encode has it
        "日本語 emoji 🎉 naïve\n\n  spaces\tand tabs " * 50,
        "a lone surrogate \ud800 from a JSON escape",  # tiktoken's buffer path refuses it
    ],
)
def test_encode_array_gives_encodes_tokens(text):
    tokens = encode_array(text)
    assert tokens.dtype == np.uint16 and tokens.tolist() == encode(text)


@pytest.mark.parametrize(
    "text", ["héllo wörld", "日本語のテキスト", "emoji 🎉🐍 ok", "naïve café ☕"]
)
def test_stream_decoder_never_shows_replacement_char(text):
    decoder = StreamDecoder()
    pieces = [decoder.push(t) for t in encode(text)] + [decoder.flush()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == text


def test_some_characters_really_are_split_across_tokens():
    # Decoding token by token without holding back would show U+FFFD: the test above matters.
    tokens = encode("emoji 🎉🐍 ok")
    assert any("\ufffd" in decode([t]) for t in tokens)


def test_offline_tokenizer_error_names_cache_variable(monkeypatch):
    def offline(name):
        raise ConnectionError("Failed to resolve 'openaipublic.blob.core.windows.net'")

    tokenizer.get_tokenizer.cache_clear()
    monkeypatch.setattr(tokenizer.tiktoken, "get_encoding", offline)
    try:
        with pytest.raises(TokenizerError) as info:
            tokenizer.get_tokenizer()
        message = str(info.value)
        assert "TIKTOKEN_CACHE_DIR" in message and "\n" not in message
    finally:
        tokenizer.get_tokenizer.cache_clear()
