"""`tengine data prepare`: tokenize text/JSONL files into shards for `data.source: tokens`.

    tengine data prepare 'corpus/**/*.txt' --out data/corpus
    tengine data prepare docs.jsonl --out data/docs --tokenizer bpe --bpe-vocab-size 8192
    tengine data prepare docs.jsonl --out data/docs --tokenizer hf --tokenizer-path tok/ \
        --text-field body --val-fraction 0.005 --shard-tokens 50000000

Prints one summary line; no input, a bad JSONL line (file:line) or an empty corpus exit 2.
"""

from __future__ import annotations

import argparse


def cmd_data_prepare(args: argparse.Namespace) -> int:
    from tengine.data.prepare import PrepareOptions, prepare, summary_line

    opts = PrepareOptions(tokenizer=args.tokenizer, tokenizer_path=args.tokenizer_path,
                          eos_token=args.eos_token, bpe_vocab_size=args.bpe_vocab_size,
                          text_field=args.text_field, val_fraction=args.val_fraction,
                          shard_tokens=args.shard_tokens)
    meta = prepare(args.inputs, args.out, opts)
    print(summary_line(meta, args.out))
    return 0


def add_commands(sub) -> None:
    data = sub.add_parser("data", help="prepare data: tokenize a corpus into token shards")
    data_sub = data.add_subparsers(dest="action", required=True)
    p = data_sub.add_parser("prepare", help="tokenize text/JSONL files into .bin shards "
                            "(the `tokens` source)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="text or .jsonl files, globs (quote them; ** allowed) or directories")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (new or empty)")
    p.add_argument("--tokenizer", choices=("byte", "bpe", "hf"), default="byte",
                   help="byte (default), bpe (trained here on the inputs) or hf (--tokenizer-path)")
    p.add_argument("--tokenizer-path", metavar="P",
                   help="with --tokenizer hf: a tokenizer.json or a save_pretrained directory")
    p.add_argument("--eos-token", metavar="TOKEN",
                   help="end-of-document token of an hf tokenizer (default: its own)")
    p.add_argument("--bpe-vocab-size", type=int, default=1024, metavar="N",
                   help="vocabulary of --tokenizer bpe (default 1024, ≥ 260)")
    p.add_argument("--text-field", default="text", metavar="NAME",
                   help="field of each JSONL record holding its text (default: text)")
    p.add_argument("--val-fraction", type=float, default=0.01, metavar="F",
                   help="last fraction of the tokens written as val_*.bin (default 0.01; 0 = none)")
    p.add_argument("--shard-tokens", type=int, default=100_000_000, metavar="N",
                   help="tokens per shard file (default 100M)")
    p.set_defaults(func=cmd_data_prepare)
