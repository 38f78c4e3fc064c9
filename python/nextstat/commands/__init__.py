"""CLI commands that live outside :mod:`nextstat.cli`, one module per family.

Each module defines ``COMMANDS``, a list of :class:`click.Command` objects; :mod:`nextstat.cli`
adds them to the ``nextstat`` group (:data:`MODULES` lists them). Commands use the shared
options and error policy of :mod:`nextstat.cli` (``model_options``, ``output_options``, ...).
"""

MODULES = (
    "nextstat.commands.workspace",    # inspect, prune, rename, combine, sort, digest, patchset
    "nextstat.commands.convert",      # xml2json, json2xml, HS3
    "nextstat.commands.diagnostics",  # yields, minos, gof, impacts
    "nextstat.commands.toys",         # toys, scan-patches
)
