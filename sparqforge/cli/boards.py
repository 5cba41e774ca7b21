"""``sparqforge build`` and ``sparqforge synth``: board bitstreams and resource reports
(:mod:`sparqforge.boards.build`, ``docs/boards.md``)."""

__all__ = ["add_board_parsers", "cmd_build", "cmd_synth"]

import json
from pathlib import Path

from ..errors import ConfigError
from .outputs import check_output_dir


def _board_report(report, as_json):
    from ..boards.build import summary
    from .main import _emit

    if as_json:
        _emit(json.dumps({k: v for k, v in report.items() if k != "cells"}, indent=2))
    else:
        _emit(summary(report))


def _build_dir(args):
    """The checked build directory of ``build`` and ``synth`` (default build/BOARD)."""
    from ..boards.catalog import get_board

    board = get_board(args.board)
    if args.out is None:
        return check_output_dir(Path("build") / board.name, "--out")
    return check_output_dir(args.out, "--out", f"build/{board.name}")


def cmd_build(args):
    from ..boards.build import build_board

    if args.seeds is not None:
        if args.seed is not None:
            raise ConfigError("Give --seed (one placement) or --seeds (several), not both")
        from .explore import build_seeds

        return build_seeds(args, _build_dir(args))
    _board_report(build_board(args.board, args.config, _build_dir(args), seed=args.seed,
                              router=args.router), args.json)
    return 0


def cmd_synth(args):
    from ..boards.build import build_board, synth_board

    for option, what in (("seed", "is nextpnr's placement seed"),
                         ("router", "chooses nextpnr's router")):
        if getattr(args, option) is not None and not args.place:
            raise ConfigError(f"--{option} {what}; add --place")
    if args.place:
        report = build_board(args.board, args.config, _build_dir(args), seed=args.seed,
                             router=args.router)
    else:
        report = synth_board(args.board, args.config, _build_dir(args))
    _board_report(report, args.json)
    return 0


class _BoardNames:
    """The board names in ``--board``'s help, looked up only when the help is shown:
    importing the boards (Amaranth and amaranth-boards) would slow every command."""

    def __str__(self):
        from ..boards.catalog import BOARDS

        return ", ".join(BOARDS)


def _add_board_options(parser):
    board = parser.add_argument("--board", required=True, metavar="BOARD",
                                help="one of: %(boards)s (or with _ for -)")
    board.boards = _BoardNames()  # argparse fills %(name)s from the action's attributes
    parser.add_argument("--config", metavar="FILE",
                        help="JSON configuration: accelerator parameters plus clk_freq and "
                             "baud (default: the board's reference configuration; see "
                             "docs/boards.md)")
    parser.add_argument("--out", metavar="DIR", help="build directory (default build/BOARD)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def _add_router_option(parser, prefix=""):
    # Checked by the build (boards.build.ROUTERS): importing it here would import Amaranth.
    parser.add_argument("--router", metavar="{router1,router2}",
                        help=f"{prefix}nextpnr's router (ECP5, iCE40; default router1 on the "
                             f"ULX3S and iCE40, router2 on the other ECP5 boards); router1 "
                             f"for the largest arrays, see docs/boards.md")


def add_board_parsers(sub):
    build = sub.add_parser("build", help="build a board's bitstream with open tools",
                           description="Elaborate the board system (accelerator, UART, clock, "
                                       "LEDs) and run the open flow as far as the installed "
                                       "tools go: the whole ECP5 / iCE40 flow (YoWASP), yosys "
                                       "for Xilinx (nextpnr-xilinx and prjxray when found). "
                                       "Prints utilization and fmax.")
    _add_board_options(build)
    build.add_argument("--seed", type=int, help="nextpnr's placement seed (ECP5, iCE40)")
    build.add_argument("--seeds", type=int, metavar="N",
                       help="place N times (seeds 1..N, on Dask workers) and keep the "
                            "best-timed build; every result in OUT/seeds/results.sqlite")
    build.add_argument("--workers", type=int,
                       help="with --seeds: local Dask workers (default: one per core)")
    _add_router_option(build)
    build.set_defaults(func=cmd_build)

    synth = sub.add_parser("synth", help="resource report of a board's design",
                           description="Synthesize the board system with yosys and report "
                                       "LUT, FF, DSP and BRAM use; with --place also place "
                                       "and route (as `build` does) and report fmax.")
    _add_board_options(synth)
    synth.add_argument("--place", action="store_true",
                       help="also place, route and pack where the tools are installed")
    synth.add_argument("--seed", type=int, help="with --place: nextpnr's placement seed")
    _add_router_option(synth, "with --place: ")
    synth.set_defaults(func=cmd_synth)

