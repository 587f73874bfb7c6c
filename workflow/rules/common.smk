"""What the configuration asks for, as plain functions: datasets, test pairs, runs, command lines.

Everything the DAG needs is known from the configuration alone: the test pairs of every dataset
come from its spec in the dataset registry (regbench.data.registry: the protocol splits of
LPBA40 and Mindboggle101, the demo's deterministic naming rule), so a dry run needs neither raw
nor prepared data. The registry also gives each dataset's defaults, allowed scales, preparer
options and download.

This file imports only pure-Python modules of regbench (naming, the dataset registry, the report
style), from this checkout: Snakemake's own environment needs nothing but Snakemake, even when
regbench is not installed there (`--use-conda` installs it in the rules' environment).

A *run* is one column of an experiment: a method at one slice step. Its folder under
results/{dataset}/pairs/{experiment}/ is the method name, or {method}-slice{step} for a thinned
moving volume (step > 1).
"""

import functools
import json
import os
import re
import shlex
import sys
import types
from typing import NamedTuple

import yaml
from snakemake.exceptions import WorkflowError

sys.path.insert(0, workflow.basedir)  # this checkout's regbench, installed or not

from regbench import naming
from regbench.data import registry
from regbench.data import scale as scale_rules
from regbench.reports import style
from regbench.training import config as train_config

DATASETS = list(config["datasets"])
try:
    REGISTERED = registry.available_datasets()
except ValueError as err:
    raise WorkflowError(f"dataset registry: {err}") from None
METHODS = config["methods"]
EXTERNAL = [name for name, method in METHODS.items() if "rule_file" in method]
INTERNAL = [name for name in METHODS if name not in EXTERNAL]
LEARNED = [name for name in INTERNAL if METHODS[name]["learned"]]
PER_RUN = [name for name in INTERNAL if name not in LEARNED and METHODS[name]["per_run"]]
"""Methods that are not learned but register a run's pairs in one job (`per_run`)."""
EXTERNAL_RULE_FILES = sorted({METHODS[name]["rule_file"] for name in EXTERNAL})
"""Included by the Snakefile; paths are relative to the working directory (the repository)."""
RESERVED_FOLDERS = ("pairs", "models", "tables")
"""Folders of results/{dataset}/ that are not experiments."""


class Run(NamedTuple):
    name: str
    method: str
    slice_step: int
    model: str | None
    """Model folder under results/{dataset}/models/, or None for a method that is not learned."""


def _alternatives(names):
    """Regex matching exactly one of ``names`` (a wildcard constraint)."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!)"


SLICE_SUFFIX = r"(?:-slice[0-9]+)?"
DATASET_REGEX = _alternatives(REGISTERED)
PREPARED_REGEX = _alternatives(name for name, spec in REGISTERED.items() if spec.prepared)
"""Datasets that `regbench prepare` makes (not the demo, which `demo_data` makes)."""
CLASSIC_RUN_REGEX = f"(?:{_alternatives(set(INTERNAL) - set(LEARNED) - set(PER_RUN))}){SLICE_SUFFIX}"
"""Runs of the suite's methods that are not learned (`register`, one job per pair)."""
LEARNED_RUN_REGEX = f"(?:{_alternatives(LEARNED)}){SLICE_SUFFIX}"
PER_RUN_REGEX = f"(?:{_alternatives(PER_RUN)}){SLICE_SUFFIX}"


def _check_datasets():
    """Every configured dataset is registered, with the settings its spec needs and a scale it
    allows (checked here, so that a bad one fails when the workflow is planned)."""
    for dataset in DATASETS:
        if dataset not in REGISTERED:
            raise WorkflowError(f"config: datasets.{dataset}: not a registered dataset "
                                f"({', '.join(REGISTERED)}); add a file declaring its Dataset to "
                                f"a folder of {registry.DATASET_PATH_ENV}")
        spec, settings = REGISTERED[dataset], dataset_settings(dataset)
        try:
            spec.check_scale(settings["scale"])
        except ValueError as err:
            raise WorkflowError(f"config: datasets.{dataset}.scale: {err}") from None
        if spec.prepared and "raw" not in settings:
            raise WorkflowError(f"config: datasets.{dataset}.raw is required: the folder of its "
                                f"original distribution. {spec.how_to_get}")
        if settings.get("download") and spec.download is None:
            raise WorkflowError(f"config: datasets.{dataset}.download: {spec.how_to_get}")


def _check_config():
    for path in workflow.configfiles:
        _check_unique_keys(path)
    for name, experiment in config["experiments"].items():
        if name in RESERVED_FOLDERS:
            raise WorkflowError(f"config: experiment name {name!r} is reserved "
                                f"({', '.join(RESERVED_FOLDERS)})")
        for method in experiment["methods"]:
            if method not in METHODS:
                raise WorkflowError(f"config: experiment {name!r} names method {method!r}, "
                                    f"which is not under `methods` ({', '.join(METHODS)})")
            if method in EXTERNAL and experiment["slice_steps"] != [1]:
                raise WorkflowError(f"config: experiment {name!r}: external method {method!r} "
                                    "runs at slice step 1 only")
        needed = naming.TABLE_NEEDS.get(name, ())
        if needed and not set(experiment["methods"]) & set(needed):
            raise WorkflowError(f"config: experiment {name!r} runs none of "
                                f"{', '.join(needed)}: its table would show nothing of the "
                                f"{name}")
        for dataset in experiment.get("datasets", []):
            if dataset not in DATASETS:
                raise WorkflowError(f"config: experiment {name!r} names dataset {dataset!r}, "
                                    f"which is not under `datasets` ({', '.join(DATASETS)})")
    available = _registered_methods()
    for name in INTERNAL if available is not None else ():
        _check_method(name, available)
    labels = {naming.CANONICAL_LABELS.get(name, name): name for name in INTERNAL}
    if available is not None:
        labels.update({cls.label: name for name, cls in available.items()})
    for name in EXTERNAL:
        if METHODS[name]["learned"]:
            raise WorkflowError(f"config: external method {name!r} cannot be `learned`; its "
                                "rule file trains it if it needs to")
        label = METHODS[name].get("label", name)
        if label in labels:
            raise WorkflowError(f"config: methods.{name}: label {label!r} is the label of "
                                f"method {labels[label]!r}; the tables could not tell the two "
                                "apart: give another")
        labels[label] = name
    figure_method = config["figures"]["method"]
    if figure_method in METHODS and figure_method not in LEARNED:
        raise WorkflowError(f"config: figures.method {figure_method!r} is not a learned method")
    for name, experiment in config["experiments"].items():
        for dataset in experiment.get("datasets", DATASETS):
            _check_slice_steps(name, experiment["slice_steps"], dataset)
    for dataset in DATASETS:
        _check_crop_jitter(dataset)
    for dataset in DATASETS:
        splits = config["datasets"][dataset].get("splits", {})
        listed = [s for subjects in splits.values() for s in subjects]
        twice = sorted({s for s in listed if listed.count(s) > 1})
        if twice:
            raise WorkflowError(f"config: datasets.{dataset}.splits: {', '.join(twice)} in more "
                                "than one split; the splits must be disjoint")
        if len(test_subjects(dataset)) < 2:
            raise WorkflowError(f"config: {dataset} has fewer than 2 test subjects "
                                f"({', '.join(test_subjects(dataset)) or 'none'}); check "
                                f"datasets.{dataset}.subjects")
        options = {o.name for o in REGISTERED[dataset].options if not o.workflow_threads}
        unknown = sorted(set(config["datasets"][dataset].get("prepare", {})) - options)
        if unknown:
            raise WorkflowError(f"config: datasets.{dataset}.prepare: {', '.join(unknown)} "
                                f"{'is not an option' if len(unknown) == 1 else 'are not options'}"
                                f" of its preparer (it takes: {', '.join(sorted(options))})")
        pair = figure_pair(dataset)
        if pair not in test_pairs(dataset):
            raise WorkflowError(f"config: figures pair {pair} is not a test pair of {dataset}")


def grid(dataset):
    """The voxels (X, Y, Z) of a configured dataset once prepared: known from its scale."""
    return scale_rules.grid_shape(float(dataset_settings(dataset)["scale"]))


def _check_slice_steps(experiment, steps, dataset):
    """A slice step keeps 2 slices at least of the grid's axis 1."""
    for step in steps:
        problem = scale_rules.slice_step_problem(step, grid(dataset)[1])
        if problem:
            raise WorkflowError(f"config: experiments.{experiment}.slice_steps on {dataset}: "
                                f"{problem}")


def _check_crop_jitter(dataset):
    """Every model's crop_jitter fits the dataset's grid (`TrainConfig.check_grid`)."""
    for model in models(dataset):
        settings = train_settings(types.SimpleNamespace(dataset=dataset, model=model))
        jitter = settings.get("crop_jitter", train_config.SETTINGS["crop_jitter"].default)
        try:
            train_config.TrainConfig(crop_jitter=jitter).check_grid(grid(dataset))
        except ValueError as err:
            raise WorkflowError(f"config: train.crop_jitter of {model} on {dataset}: {err}"
                                ) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key written twice in one mapping (PyYAML keeps the last
    without a word, so a setting given twice would silently lose one of its values)."""

    def construct_mapping(self, node, deep=False):
        self.flatten_mapping(node)
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise WorkflowError(
                    f"config: {key_node.start_mark.name}, line {key_node.start_mark.line + 1}: "
                    f"key {key!r} is given twice in one mapping (YAML would keep the last); "
                    "keep one")
            seen.add(key)
        return super().construct_mapping(node, deep)


def _check_unique_keys(path):
    with open(path) as file:
        yaml.load(file, Loader=_UniqueKeyLoader)


def _registered_methods():
    """The method registry (name -> class), or None where it cannot be imported (Snakemake's own
    environment need not hold PyTorch: the rules' environment then finds what is wrong)."""
    try:
        from regbench.methods import available_methods
    except ImportError:
        return None
    return available_methods()


def _check_method(name, available):
    """Refuse, when the DAG is built, what would fail only when the method's jobs run: a method
    that is not registered, a missing optional package, `learned` that is not the method's, an
    option it does not take (each option alone; its device is not checked: jobs may run on
    another machine)."""
    cls = available.get(name)
    if cls is None:
        raise WorkflowError(
            f"config: method {name!r} under `methods` is not a regbench method "
            f"({', '.join(available)}); add its file to baselines/, models/ or a folder "
            "of REGBENCH_METHOD_PATH, or give it a rule_file")
    missing = cls.missing_packages()
    if missing:
        raise WorkflowError(f"config: methods.{name}: {missing}")
    if METHODS[name]["learned"] != cls.learned:
        raise WorkflowError(
            f"config: methods.{name}: learned: {str(METHODS[name]['learned']).lower()}, but "
            f"{name!r} is {'a' if cls.learned else 'not a'} learned method; write learned: "
            f"{str(cls.learned).lower()}")
    try:
        cls.check_options(METHODS[name].get("options") or {})
    except ValueError as err:
        raise WorkflowError(f"config: methods.{name}.options: {err}") from None


# --- datasets and pairs ---------------------------------------------------------------------


@functools.cache
def dataset_settings(dataset):
    """The configuration's settings of a dataset, with its spec's defaults (scale, raw)."""
    return REGISTERED[dataset].settings(config["datasets"].get(dataset, {}))


@functools.cache
def test_subjects(dataset):
    """Test subject IDs of a configured dataset, in split order."""
    try:
        return REGISTERED[dataset].test_subjects(dataset_settings(dataset))
    except ValueError as err:
        raise WorkflowError(f"config: datasets.{dataset}: {err}") from None


def test_pairs(dataset):
    """Every ordered (moving, fixed) pair of distinct test subjects, as `regbench
    register-pairs --test-pairs` registers them."""
    return naming.ordered_pairs(test_subjects(dataset))


def figure_pair(dataset):
    """The pair Fig. 2 and Fig. 3 show: configured, else the first test pair."""
    chosen = config["figures"]
    if "moving" in chosen or "fixed" in chosen:
        return chosen.get("moving"), chosen.get("fixed")
    return test_pairs(dataset)[0]


def raw_dir(dataset):
    return dataset_settings(dataset)["raw"]


DOWNLOAD_MARKER = ".downloaded"
"""Touched in a dataset's raw folder when ``regbench download`` succeeded (the download itself
resumes)."""


def download_marker(dataset):
    return f"{raw_dir(dataset)}/{DOWNLOAD_MARKER}"


def prepare_input(wildcards):
    if wildcards.dataset in DOWNLOADED:
        return {"raw": download_marker(wildcards.dataset)}
    return {}  # a local copy is not an input: a dry run must not need it


def demo_test_subjects_arg():
    """--test-subjects of the demo's generation, where the configuration sets it."""
    chosen = config["datasets"].get("demo", {}).get("test_subjects")
    return "" if chosen is None else f"--test-subjects {chosen}"


def prepare_subjects_args(wildcards):
    """--subjects, --scale and the splits of one's own of a real dataset's preparation."""
    settings = dataset_settings(wildcards.dataset)
    args = [f"--scale {settings['scale']}"]
    if settings.get("subjects"):
        args.append(f"--subjects {','.join(settings['subjects'])}")
    for split, subjects in settings.get("splits", {}).items():
        args.append(f"--{split} {','.join(subjects) or shlex.quote('')}")
    options = {option.name: option for option in REGISTERED[wildcards.dataset].options}
    for name, value in settings.get("prepare", {}).items():
        values = ([f"{key}={json.dumps(item)}" for key, item in value.items()]
                  if options[name].repeatable and isinstance(value, dict) else [value])
        args += [f"--{name} {shlex.quote(str(item))}" for item in values]
    return " ".join(args)


def prepare_threads_arg(wildcards, threads):
    """The preparer's options that take the job's threads (LPBA40's ANTs: --threads)."""
    return " ".join(f"--{option.name} {threads}" for option in REGISTERED[wildcards.dataset].options
                    if option.workflow_threads)


def download_source_args(dataset):
    settings = dataset_settings(dataset)
    return " ".join(f"--{key} {shlex.quote(settings[key])}" for key in ("url", "sha256")
                    if key in settings)


# --- experiments and runs -------------------------------------------------------------------


def experiments(dataset):
    """Names of the experiments run on ``dataset``."""
    return [name for name, experiment in config["experiments"].items()
            if dataset in experiment.get("datasets", DATASETS)]


IMAGE_FREE = ("identity",)
"""Methods whose field depends on neither image. Thinning the moving volume changes nothing they
output, and Dice is taken on the original moving labels, so a run at a slice step > 1 would
repeat step 1 to the last digit and only enlarge the family of tests: they run at step 1."""


def runs(experiment):
    """The runs of an experiment, method by method, slice step by slice step (an image-free
    method at slice step 1 only)."""
    settings = config["experiments"][experiment]
    found = []
    for method in settings["methods"]:
        for step in settings["slice_steps"]:
            if step > 1 and method in IMAGE_FREE:
                continue
            name = naming.run_name(method, step)
            model = None
            if method in LEARNED:
                model = name if step > 1 and settings["train_thinned"] else method
            found.append(Run(name, method, step, model))
    return found


def run_of(wildcards):
    for run in runs(wildcards.experiment):
        if run.name == wildcards.run:
            return run
    raise WorkflowError(f"experiment {wildcards.experiment!r} has no run {wildcards.run!r}")


pair_dir = naming.pair_dir
FIELD_FILE = naming.FIELD_FILE
RUNTIME_FILE = naming.RUNTIME_FILE
METRICS_FILE = naming.METRICS_FILE
"""The files of a pair's folder, named by the vocabulary (regbench.naming) alone."""


def manifest(dataset):
    """data/{dataset}/dataset.json: a prepared dataset's record, written last, so it stands for
    the whole folder (``dataset`` may be the wildcard ``"{dataset}"``)."""
    return f"data/{dataset}/{naming.MANIFEST}"


def run_folder(pair_file):
    """The run folder of a file in a pair's folder: results/{dataset}/pairs/{experiment}/{run}."""
    return os.path.dirname(os.path.dirname(os.path.dirname(pair_file)))


def metrics_files(wildcards):
    """metrics.json of every run and test pair of one experiment on one dataset."""
    return [f"{pair_dir(wildcards.dataset, wildcards.experiment, run.name, m, f)}/{METRICS_FILE}"
            for run in runs(wildcards.experiment) for m, f in test_pairs(wildcards.dataset)]


def model_path(dataset, model):
    return f"results/{dataset}/models/{model}/model.pt"


def models(dataset):
    """The model folders trained on ``dataset``, in report order."""
    found = {run.model: run for e in experiments(dataset) for run in runs(e) if run.model}
    return sorted(found, key=lambda m: (style.method_rank(model_method(m)[0]),
                                        model_method(m)[1]))


def model_label(model):
    """How figures name a model: its method's label, with its slice step when thinned."""
    method, step = model_method(model)
    return run_label(Run(model, method, step, model))


# --- command lines --------------------------------------------------------------------------


def option_args(options):
    """--option KEY=VALUE arguments, sorted by key (the YAML order of a method's options must not
    change a job's params, or Snakemake reruns it); values as JSON, which the CLI reads as YAML."""
    return [f"--option {shlex.quote(f'{key}={json.dumps(value, sort_keys=True)}')}"
            for key, value in sorted(options.items())]


def train_settings(wildcards):
    """Train settings of a model: top level, then the dataset's, then the method's overrides."""
    method = model_method(wildcards.model)[0]
    return {**config["train"], **config["datasets"][wildcards.dataset].get("train", {}),
            **METHODS[method].get("train", {})}


def model_method(model):
    """(method, slice step) of a model folder name: {method} or {method}-slice{step}."""
    if model in LEARNED:
        return model, 1
    method, _, step = model.rpartition("-slice")
    return method, int(step)


def train_gpus(wildcards):
    settings = train_settings(wildcards)
    return settings["gpus"] if settings["device"] == "cuda" else 0


def train_threads(wildcards, threads):
    """CPU threads of each training process: the job's threads (as Snakemake granted them),
    shared by its processes when it trains data-parallel on several GPUs."""
    return max(1, threads // max(1, train_gpus(wildcards)))


def train_launcher(wildcards):
    """``regbench``, or torchrun for data-parallel training on several GPUs (one process each)."""
    gpus = train_gpus(wildcards)
    if gpus > 1:
        return f"torchrun --standalone --nproc_per_node {gpus} -m regbench.cli"
    return "regbench"


TRAIN_FLAG_SETTINGS = tuple(name for name, setting in train_config.SETTINGS.items()
                            if setting.flag and name not in ("threads", "moving_slice_step"))
"""The train settings of the configuration that `regbench train` takes as flags (threads comes
from the job's threads, the slice step from the model's name)."""


def train_args(wildcards):
    method, step = model_method(wildcards.model)
    s = train_settings(wildcards)
    values = {name: s[name] for name in TRAIN_FLAG_SETTINGS}
    if step > 1:
        values["moving_slice_step"] = step
    return " ".join(train_config.command_line(values) + option_args(METHODS[method]["options"]))


def scaled(amount):
    """A resource callable: ``amount`` (MB, minutes) times the attempt, so a job retried after
    running out of memory or time asks for twice as much, then three times..."""
    return lambda wildcards, attempt: amount * attempt


REGISTER = config["register"]
REGISTER_GPUS = int(REGISTER["device"] == "cuda")
"""GPUs a job running a trained network holds (registration, Fig. 2)."""


def register_args(run):
    """Options of `regbench register-pairs` for a run: threads, slice step, and the method's
    options (a learned method's come from its checkpoint)."""
    args = [f"--threads {REGISTER['threads']}"]
    if run.slice_step > 1:
        args.append(f"--slice-step {run.slice_step}")
    if run.model is None:
        args += option_args(METHODS[run.method]["options"])
    else:
        args.append(f"--device {REGISTER['device']}")
    return " ".join(args)


def run_inputs(dataset):
    """Input function of a one-job-per-run registration: the dataset, and a learned run's
    model.pt."""

    def inputs(wildcards):
        found = {"data": manifest(dataset)}
        model = run_of(wildcards).model
        if model is not None:
            found["model"] = model_path(dataset, model)
        return found

    return inputs


def checkpoint_arg(wildcards, input):
    return f"--checkpoint {input.model}" if "model" in input.keys() else ""


def keeps_volumes(dataset, moving, fixed):
    """Whether the pair keeps field.nii.gz, warped.nii.gz and warped_labels.nii.gz."""
    return REGISTER["keep_volumes"] or (moving, fixed) == FIGURE_PAIRS[dataset]


def field_output(path, kept):
    """An output field.nii.gz, temporary (deleted once scored) unless ``kept``."""
    return path if kept else temp(path)


def volume_args(dataset):
    """`regbench evaluate-pairs` arguments naming the pairs whose warped volumes are written."""
    kept = [pair for pair in test_pairs(dataset) if keeps_volumes(dataset, *pair)]
    return " ".join(f"--keep-volumes {moving} {fixed}" for moving, fixed in kept)


# --- report ---------------------------------------------------------------------------------

CONVENTIONS = list(naming.CONVENTIONS)
"""Region Dice conventions of the tables and figures (docs/protocol.md)."""
TABLE_KINDS = naming.TABLE_KINDS
"""Experiments with a table of their own (`regbench tables --kind`)."""


def run_label(run):
    """How Fig. 3 names a run: the configured label, else the canonical one, else the name."""
    label = METHODS[run.method].get("label") or naming.CANONICAL_LABELS.get(run.method, run.method)
    return style.run_label(label, run.slice_step)


def figure_pair_metrics(dataset):
    """metrics.json of every run of the main experiment on the figure pair."""
    moving, fixed = figure_pair(dataset)
    return [f"{pair_dir(dataset, 'main', run.name, moving, fixed)}/{METRICS_FILE}"
            for run in runs("main")]


# --- targets --------------------------------------------------------------------------------


def all_targets():
    """Every experiment's per_pair.csv, its tables, and the figures of every dataset."""
    targets = []
    for dataset in DATASETS:
        done = experiments(dataset)
        targets += [f"results/{dataset}/{experiment}/per_pair.csv" for experiment in done]
        tables = f"results/{dataset}/tables"
        if "main" in done:
            targets += [f"{tables}/table1_{c}.md" for c in CONVENTIONS]
            targets += [f"figures/{dataset}/{stem}.pdf"
                        for stem in ("fig4_faim", "dice_time_faim", "fig3_warped")]
        targets += [f"{tables}/{kind}.md" for kind in TABLE_KINDS[1:] if kind in done]
        if config["figures"]["method"] in LEARNED:
            targets.append(f"figures/{dataset}/fig2_pyramid.pdf")
        if models(dataset):
            targets.append(f"figures/{dataset}/learning_curves.pdf")
    return targets



_check_datasets()
_check_config()

DOWNLOADED = [dataset for dataset in DATASETS if dataset_settings(dataset).get("download")]
"""Configured datasets that the workflow downloads first (`download_{dataset}`)."""

FIGURE_PAIRS = {dataset: figure_pair(dataset) for dataset in DATASETS}
FIGURE_MOVING_REGEX = _alternatives({moving for moving, _ in FIGURE_PAIRS.values()})
FIGURE_FIXED_REGEX = _alternatives({fixed for _, fixed in FIGURE_PAIRS.values()})
"""Wildcard constraints of `register_figure_pair`: within one dataset, they match its figure
pair alone (checked below), since the datasets' subject IDs differ."""

for dataset, pair in FIGURE_PAIRS.items():
    matched = [(m, f) for m, f in test_pairs(dataset)
               if re.fullmatch(FIGURE_MOVING_REGEX, m) and re.fullmatch(FIGURE_FIXED_REGEX, f)]
    if matched != [pair]:
        raise WorkflowError(f"config: the figure pairs {FIGURE_PAIRS} match other test pairs "
                            f"of {dataset} as well: {matched}")
