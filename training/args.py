"""The trainer's configuration: :class:`Args`, its command-line flags, resume merging.

One :class:`Args` dataclass is the whole configuration of
:func:`partitiontuner.training.ppo.train` (CleanRL's layout: every field has a default
and a docstring, which is its ``--help`` text). This module is light (no torch) because
``partitiontuner``'s parser adds the training flags for every command line it builds:
:func:`add_training_arguments` puts a flag per field on any ``argparse`` parser (shared
by ``partitiontuner train`` and ``python -m partitiontuner.training.ppo``), and
:func:`args_from_namespace` turns the parsed flags into ``Args``, merged with the
checkpoint's own ``Args`` on ``--resume`` (:func:`merge_resume`).
"""

from __future__ import annotations

import argparse
import ast
import inspect
import math
from dataclasses import dataclass, fields
from typing import Any

from partitiontuner.distributed import LOCAL
from partitiontuner.errors import ConfigError

BASELINES = ("greedy", "critic")
VAL_REFERENCES = ("baselines", "oracle")
#: fields computed by :meth:`Args.derive`, not options
DERIVED = ("batch_episodes", "minibatch_problems")
#: fields a resumed run always takes from its own command line, never from the checkpoint
RUN_FIELDS = ("out", "resume", "progress", "stop_after_iterations", "time_limit_min", "ray", "ray_actors")
#: extra spellings of some flags (``partitiontuner train``'s historical names)
ALIASES = {"total_timesteps": "--steps", "time_limit_min": "--time-limit"}
_CHOICES = {"baseline": BASELINES, "val_reference": VAL_REFERENCES}
#: flags whose value may be left out, and the value they then take (``--ray`` alone: a local Ray instance)
_BARE = {"ray": LOCAL}


@dataclass
class Args:
    seed: int = 1
    """seed of everything: corpus, problem draws, weights, sampling, minibatches"""
    torch_deterministic: bool = True
    """use deterministic torch algorithms (resumed runs match uninterrupted ones)"""
    threads: int = 1
    """torch intra-op threads (1: the rollout's small batches gain nothing from more, and
    on a shared machine extra threads spin against other processes)"""
    total_timesteps: int = 1_000_000
    """sampled op decisions (environment steps) to train for; the behaviour cloning also
    stops once it has cloned this many expert decisions"""
    time_limit_min: float = 0.0
    """stop (with a checkpoint) after this many minutes, the warm start included; 0 = no limit"""
    learning_rate: float = 1e-4
    """Adam learning rate of PPO"""
    anneal_lr: bool = True
    """decay the learning rate linearly to 0"""
    problems_per_iteration: int = 8
    """corpus problems drawn per iteration"""
    samples_per_problem: int = 16
    """sampled episodes per drawn problem (plus one greedy episode for the baseline)"""
    baseline: str = "greedy"
    """advantage baseline: 'greedy' (sampled return minus the greedy return of the same
    problem) or 'critic' (GAE with the value head)"""
    gamma: float = 1.0
    """discount of the value head's return-to-go targets and of the 'critic' baseline's GAE
    (1: the return is exactly the plan's normalised gain; below 1 only for experiments)"""
    gae_lambda: float = 0.95
    """GAE lambda of the 'critic' baseline"""
    num_minibatches: int = 4
    """minibatches per epoch"""
    update_epochs: int = 4
    """epochs over each rollout"""
    norm_adv: bool = True
    """divide advantages by their standard deviation over the iteration (at least adv_floor)"""
    adv_floor: float = 1e-3
    """smallest advantage scale when normalising: gain differences below ~0.1 % of the
    reference makespan are not blown up to unit size"""
    clip_coef: float = 0.2
    """PPO ratio clip"""
    clip_vloss: bool = True
    """clip the value loss as PPO does"""
    ent_coef: float = 0.01
    """entropy bonus (keeps sampling exploring around the cloned policy)"""
    vf_coef: float = 0.5
    """value loss weight"""
    max_grad_norm: float = 0.5
    """gradient clipping norm"""
    target_kl: float = 0.02
    """stop an update's epochs early above this approximate KL; 0 = never"""
    init: str = ""
    """start from this checkpoint's weights instead of the warm start (e.g. a cloned policy)"""
    bc_epochs: int = 60
    """behaviour-cloning epochs over the best demonstration of every training problem
    before PPO (training/demonstrations.py); 0 = pure PPO from scratch"""
    bc_learning_rate: float = 1e-3
    """Adam learning rate of the behaviour cloning"""
    bc_batch: int = 8
    """problems per behaviour-cloning gradient step"""
    oracle_demo_s: float = 0.0
    """also demonstrate the oracle's plan of a training problem when the oracle proves it
    optimal within this many seconds (one thread); 0 = no oracle demonstrations"""
    channels: int = 64
    """policy embedding size"""
    num_layers: int = 4
    """message-passing layers"""
    hidden: int = 128
    """actor / critic MLP width"""
    generated: int = 120
    """generated graphs in the corpus"""
    min_ops: int = 20
    """smallest generated graph"""
    max_ops: int = 500
    """largest generated graph"""
    zoo_variants: int = 2
    """random platforms each training zoo model is also put on"""
    variant_fraction: float = 0.5
    """share of generated graphs on a random platform (the rest on cpu-npu)"""
    zoo_weight: float = 0.5
    """probability that a draw is a training zoo model on cpu-npu"""
    eval_every: int = 5
    """validate (greedy, training zoo models on cpu-npu) every this many iterations; 0 = only at the end"""
    val_reference: str = "baselines"
    """validation reference: 'baselines' (best of npu-first, greedy, partitiontuner, heft) or 'oracle'"""
    save_every: int = 10
    """write the checkpoint every this many iterations"""
    out: str = "runs/ppo/policy.pt"
    """checkpoint path; logs (CSV, TensorBoard) go to <out dir>/logs, the best validated policy to <out stem>-best.pt"""
    resume: str = ""
    """checkpoint to resume from (its Args are used, except resume, progress, time_limit_min,
    stop_after_iterations and the options given on this command line; out defaults to it)"""
    progress: bool = True
    """show rich progress bars (behaviour cloning, PPO)"""
    stop_after_iterations: int = 0
    """stop after this many iterations of this run, writing a checkpoint (for tests); 0 = never"""
    ray: str = ""
    """run the rollouts in Ray actors: '' = in this process; --ray alone = a Ray instance on
    this machine; --ray ADDRESS = the cluster there (HOST:PORT, ray://HOST:PORT or auto).
    The learner stays here; the numbers are those of a run without --ray"""
    ray_actors: int = 0
    """rollout actors with --ray (each holds a policy copy and a slice of the corpus);
    0 = one per CPU of the cluster, at most problems_per_iteration"""

    # filled in once after parsing
    batch_episodes: int = 0
    """problems_per_iteration * samples_per_problem (derived)"""
    minibatch_problems: int = 0
    """problems per minibatch: ceil(problems_per_iteration / num_minibatches) (derived)"""

    def derive(self) -> Args:
        """Check every field (type and range) and fill in the derived sizes.

        Raises:
            ConfigError: a field of the wrong type or out of range, naming it.
        """
        from partitiontuner.agents.policy_io import check_policy_config

        for f in fields(self):
            value, typ = getattr(self, f.name), type(getattr(_DEFAULTS, f.name))
            ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
            if typ is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ConfigError(f"training option {f.name} must be a {typ.__name__}, got {value!r}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"training option {f.name} must be finite, got {value!r}")
        positive = ("problems_per_iteration", "samples_per_problem", "num_minibatches", "update_epochs", "threads",
                    "bc_batch", "min_ops")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"training option {name} must be >= 1, got {getattr(self, name)}")
        non_negative = ("total_timesteps", "time_limit_min", "learning_rate", "gae_lambda", "adv_floor", "clip_coef",
                        "ent_coef", "vf_coef", "max_grad_norm", "target_kl", "bc_epochs", "bc_learning_rate",
                        "oracle_demo_s", "generated", "zoo_variants", "eval_every", "save_every", "stop_after_iterations",
                        "ray_actors")
        for name in non_negative:
            if getattr(self, name) < 0:
                raise ConfigError(f"training option {name} must be >= 0, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda", "variant_fraction", "zoo_weight"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"training option {name} must be between 0 and 1, got {getattr(self, name)}")
        if self.max_ops < self.min_ops:
            raise ConfigError(f"training option max_ops ({self.max_ops}) is below min_ops ({self.min_ops})")
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        check_policy_config({"channels": self.channels, "num_layers": self.num_layers, "hidden": self.hidden})
        self.batch_episodes = self.problems_per_iteration * self.samples_per_problem
        self.minibatch_problems = -(-self.problems_per_iteration // self.num_minibatches)
        return self


_DEFAULTS = Args()


def field_docs() -> dict[str, str]:
    """Each ``Args`` field's docstring (the string literal under it), for ``--help``."""
    tree = ast.parse(inspect.getsource(Args))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for a, b in zip(body, body[1:], strict=False):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = " ".join(str(b.value.value).split())  # type: ignore[union-attr]
    return docs


def args_from(overrides: dict[str, Any]) -> Args:
    """``Args`` with some fields replaced (names checked, strings converted to the field's type).

    Raises:
        ConfigError: an unknown field, or a string that is not of the field's type.
    """
    known = {f.name for f in fields(Args)} - set(DERIVED)
    values = {}
    for k, v in overrides.items():
        if k not in known:
            raise ConfigError(f"unknown training option {k!r} (one of: {', '.join(sorted(known))})")
        typ = type(getattr(_DEFAULTS, k))
        if isinstance(v, str) and typ is not str:
            try:
                v = (v.lower() in ("1", "true", "yes", "on")) if typ is bool else typ(v)
            except ValueError:
                raise ConfigError(f"training option {k}: {v!r} is not a {typ.__name__}") from None
        values[k] = v
    return Args(**values)


# ---------------------------------------------------------------------------------
# command line


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per :class:`Args` field (``--learning-rate``; booleans as
    ``--norm-adv/--no-norm-adv``; ``--steps`` and ``--time-limit`` as aliases) and
    ``--set KEY=VALUE``. Every flag defaults to ``None`` so that
    :func:`args_from_namespace` knows which ones were given."""
    docs = field_docs()
    for f in fields(Args):
        if f.name in DERIVED:
            continue
        default = getattr(_DEFAULTS, f.name)
        flags = [f"--{f.name.replace('_', '-')}", *([ALIASES[f.name]] if f.name in ALIASES else [])]
        shown = f" (default: {default})" if default != "" else ""
        help_text = (docs.get(f.name, "") + shown).replace("%", "%%")  # argparse %-formats help
        if isinstance(default, bool):
            parser.add_argument(*flags, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name in _BARE:
            parser.add_argument(*flags, dest=f.name, nargs="?", const=_BARE[f.name], default=None, metavar="ADDRESS",
                                help=help_text)
        else:
            metavar = None if f.name in _CHOICES else {int: "N", float: "X"}.get(type(default), "PATH")
            parser.add_argument(*flags, dest=f.name, type=type(default), default=None, choices=_CHOICES.get(f.name),
                                metavar=metavar, help=help_text)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="any training option by its field name (e.g. --set bc_epochs=0)")


def args_from_namespace(ns: argparse.Namespace) -> Args:
    """The :class:`Args` of parsed flags (see :func:`add_training_arguments`), merged
    with the checkpoint's on ``--resume`` (:func:`merge_resume`), checked and derived.

    Raises:
        ConfigError: a bad ``--set``, option or resume checkpoint.
    """
    overrides: dict[str, Any] = {}
    for f in fields(Args):
        value = getattr(ns, f.name, None)
        if f.name not in DERIVED and value is not None:
            overrides[f.name] = value
    for item in getattr(ns, "set", None) or []:
        key, eq, value = item.partition("=")
        if not eq:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key.strip().replace("-", "_")] = value.strip()
    return merge_resume(args_from(overrides), explicit=list(overrides)).derive()


def merge_resume(args: Args, explicit: list[str] | tuple[str, ...] = ()) -> Args:
    """With ``args.resume``: the checkpoint's ``Args``, except :data:`RUN_FIELDS` and
    the fields in ``explicit`` (set on purpose by the caller), which come from
    ``args``; ``out`` defaults to the resumed checkpoint, so the run continues where it
    was (its logs, its best checkpoint). Changing any other field makes the
    continuation differ from an uninterrupted run. Without ``resume``: ``args``.

    Raises:
        ConfigError: the checkpoint is missing, not a training checkpoint, or holds
            ``Args`` this version does not understand.
    """
    if not args.resume:
        return args
    from partitiontuner.agents.policy_io import load_checkpoint

    ck = load_checkpoint(args.resume)
    known = {f.name for f in fields(Args)} - set(DERIVED)
    saved = {k: v for k, v in ck.args.items() if k in known}  # fields of older versions are dropped
    try:
        merged = args_from(saved)
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{args.resume}: its training options are not usable ({exc})") from None
    for k in (*RUN_FIELDS, *explicit):
        setattr(merged, k, getattr(args, k))
    if "out" not in explicit:
        merged.out = args.resume
    return merged
