"""``lstmgen train``, ``eval``, ``generate``, ``demo`` and ``cache``: thin layers over the library.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lstmgen.cli.flags import _overrides
from lstmgen.cli.progress import ProgressBar
from lstmgen.errors import LstmgenError

CLAUSE_ENDS = "，。！？；：、\n"  # where streamed text is converted to generate --script's script


def cmd_train(args: argparse.Namespace) -> int:
    from lstmgen.training.distributed import is_main_process, resume_command
    from lstmgen.training.run import resume_settings, settings_config, train
    from lstmgen.training.signals import TrainingInterrupted

    if args.resume:
        run = args.out or args.corpus
        if run is None:
            raise LstmgenError("--resume needs the run directory: lstmgen train --resume RUN")
        corpus = args.corpus if args.out else None
        config = None
        where = resume_settings({key: value for section in _overrides(args).values() for key, value in section.items()},
                                preset=args.preset)
    else:
        if args.corpus is None:
            raise LstmgenError("give the corpus to train on: lstmgen train PATH (a .txt file or a folder)")
        corpus, run = args.corpus, args.out
        config = settings_config(args.preset, _overrides(args))
        where = {}
    try:
        with ProgressBar() as bar:
            run_dir = train(corpus, config, out=run, resume=args.resume, where=where, progress=bar)
    except TrainingInterrupted as stop:
        if is_main_process():  # under torchrun every rank ends here: say it once
            print(f"stopped; state saved. Continue with: {resume_command(stop.run_dir)}",
                  file=sys.stderr)  # the folder quoted: run folders often have spaces
        return 128 + stop.signum
    if is_main_process():
        _print_summary(run_dir)
    return 0


def _print_summary(run_dir: Path) -> None:
    from lstmgen.evaluation.score import describe_bits, describe_oov
    from lstmgen.model.run_dir import read_metrics

    records = read_metrics(run_dir)
    test = next((r for r in reversed(records) if r.get("split") == "test"), {})
    valid = [r for r in records if "valid_bits_per_char" in r]
    print(f"run: {run_dir}")
    if valid:
        best = min(valid, key=lambda r: r["valid_nll"])
        print(f"best valid: perplexity {best['valid_perplexity']:.2f}, {best['valid_bits_per_char']:.3f} bits/char "
              f"(step {best['step']})")
    if "test_perplexity" in test:
        bits = describe_bits(test["test_bits_per_char"], test.get("test_open_bits_per_char"))
        print(f"test: perplexity {test['test_perplexity']:.2f}, {bits}, "
              f"OOV {describe_oov(test['test_oov_rate'], test.get('test_unknown_share', 0.0))}, "
              f"{test['tokens_per_s']:,.0f} tokens/s, "
              f"{test['seconds']:.0f}s of training")


def cmd_eval(args: argparse.Namespace) -> int:
    from lstmgen.cli.flags import adapt_config
    from lstmgen.device import pick_device
    from lstmgen.evaluation.evaluate import evaluate_run
    from lstmgen.evaluation.score import describe_oov
    from lstmgen.model.run_dir import load_run

    adapt = adapt_config(args)
    run = load_run(args.run, device=pick_device(args.device))
    evaluation = evaluate_run(run, args.path, split=args.split, adapt=adapt)
    score, plain = evaluation.score, evaluation.plain
    if evaluation.warning:
        print(f"warning: {evaluation.text} {evaluation.warning}, so its score flatters the model; "
              f"`lstmgen eval {args.run}` scores the held-out test split", file=sys.stderr)
    result = {"text": evaluation.text, **score.as_dict(), "seconds": evaluation.seconds}
    if plain is not None:  # the adapted score is the result; the plain one beside it, same weights, same tokens
        result.update(adapt=evaluation.adapt.as_dict(), **plain.as_dict("plain_"),
                      plain_seconds=evaluation.plain_seconds)
    if evaluation.trained_on:
        result["trained_on"] = evaluation.trained_on
    if evaluation.seen_in_training is not None:
        result["seen_in_training"] = evaluation.seen_in_training
    if args.samples:
        from lstmgen.generation.sample_quality import sample_quality

        result.update(sample_quality(run, num_samples=args.samples, length=args.sample_length, seed=args.seed))
        if "sample_longest_copy" not in result:
            print(f"note: the run's corpus {run.info.get('corpus')!r} is not on this machine, so what the samples "
                  f"copy from the training text is not measured", file=sys.stderr)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=1))
    else:
        rows = [("perplexity", f"{score.perplexity:.2f}"), ("bits per char", f"{score.bits_per_char:.4f}")]
        if plain is not None:
            rows.insert(0, ("adapted with", f"{evaluation.adapt.mode} (docs/adaptation.md)"))
        if evaluation.has_unknown_costs:  # the train split's are not gathered: its score is no held-out result
            rows.append(("open bits per char", f"{score.open_bits_per_char:.4f} (<unk> words spelled out)"))
        if plain is not None:
            rows += [("plain perplexity", f"{plain.perplexity:.2f} (no adaptation)"),
                     ("plain bits per char", f"{plain.bits_per_char:.4f} (no adaptation)")]
        rows += [("OOV rate", describe_oov(score.oov_rate, score.unknown_share)), ("tokens", f"{score.tokens:,}"),
                 ("characters", f"{score.characters:,}")]
        rows += [(key[7:], f"{value:.4f}" if isinstance(value, float)
                  else str(value).replace("\n", "\\n")) for key, value in result.items() if key.startswith("sample_")]
        if plain is not None:
            rows.append(("seconds", f"{evaluation.seconds:.1f} adapted, {evaluation.plain_seconds:.1f} plain"))
        print(evaluation.text)
        for name, value in rows:
            print(f"  {name:<20} {value}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from lstmgen.device import pick_device
    from lstmgen.generation.cpu_step import resolve_precision
    from lstmgen.generation.generate import GenerateConfig, generate, prompts_for_run, unknown_in_prompt
    from lstmgen.model.run_dir import load_run
    from lstmgen.text.script import convert_script

    seed = args.seed
    if seed is None and args.temperature != 0:  # drawn here, so that it can be told: the text can be had again
        import random

        seed = random.SystemRandom().randrange(2**31)
    config = GenerateConfig(length=args.length, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                            repetition_penalty=args.repetition_penalty, no_repeat_ngram=args.no_repeat_ngram,
                            stop_at=args.stop_at, num_samples=args.num_samples, seed=seed,
                            acrostic=args.acrostic, precision=args.precision)
    if args.output and not Path(args.output).parent.is_dir():  # said now, not after the text is written
        raise LstmgenError(f"--output {args.output}: no folder {Path(args.output).parent} to write it in")
    device = pick_device(args.device)
    precision = resolve_precision(config.precision, device)  # int8 on a GPU: said before the model loads
    run = load_run(args.run, device=device)
    prompts = prompts_for_run(args.prompt or [""], run)
    script = args.script if args.script != "keep" else None
    unknown = list(dict.fromkeys(t for p in prompts for t in unknown_in_prompt(p, run.tokenizer, run.vocab)))
    if unknown:
        print(f"warning: the model never saw {'、'.join(unknown)} in training; it reads "
              f"{'them' if len(unknown) > 1 else 'it'} in the prompt as <unk>", file=sys.stderr)
    stream = len(prompts) * config.num_samples == 1 and not args.quiet
    held = []  # with --script, streamed text is converted a clause at a time: OpenCC converts whole words

    def show(piece: str, flush: bool = False) -> None:
        held.append(piece)
        if script is None or flush or any(mark in piece for mark in CLAUSE_ENDS):
            sys.stdout.write(convert_script("".join(held), script))
            sys.stdout.flush()
            held.clear()

    if stream:
        show(prompts[0].strip())

    def on_text(row: int, piece: str) -> None:
        show(piece)

    context = adapt = None
    if args.context:
        from lstmgen.cli.flags import adapt_config
        from lstmgen.text.splitting import read_texts

        adapt = adapt_config(args)
        # read as training read its text (the same cleaning), in the run's script as prompts are
        context = prompts_for_run(["\n".join(read_texts(args.context, run.config.data))], run)[0]
    texts = generate(run.model, run.tokenizer, run.vocab, prompts, config, on_text=on_text if stream else None,
                     context=context, adapt=adapt)
    texts = [convert_script(text, script) for text in texts]
    if stream:
        show("\n", flush=True)
    elif not args.quiet:
        for i, text in enumerate(texts):
            print(f"--- sample {i + 1} ---\n{text}")
        sys.stdout.flush()
    if seed != args.seed:
        # the precision too: on another kind of machine, auto may mean the other one
        print(f"seed {seed} (--seed {seed} --precision {precision} writes this again)", file=sys.stderr)
    if args.output:
        Path(args.output).write_text("\n\n".join(texts) + "\n", encoding="utf-8")
        print(f"written to {args.output}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lstmgen.cli.demo import run_demo

    with ProgressBar() as bar:
        return run_demo(minutes=args.minutes, out=args.out, corpus=args.corpus, progress=bar)


def cmd_cache(args: argparse.Namespace) -> int:
    from lstmgen.tokens.cache_admin import clear, prune, scan
    from lstmgen.tokens.cache_report import describe_listing, describe_removal

    if args.prune is not None and args.clear:
        raise LstmgenError("give --prune DAYS or --clear, not both")
    if args.prune is None and not args.clear:
        print("\n".join(describe_listing(scan())))
        return 0
    days = None
    if args.prune is not None:
        try:
            days = float(args.prune)
        except ValueError:
            raise LstmgenError(f"--prune {args.prune}: give a number of days, 0 or more (e.g. --prune 30)") from None
        result = prune(unused_days=days)
    else:
        result = clear()
    print("\n".join(describe_removal(result, unused_days=days)))
    if result.failed:
        more = f" (and {len(result.failed) - 1} more)" if len(result.failed) > 1 else ""
        raise LstmgenError(f"could not remove {result.failed[0]}{more}")
    return 0
