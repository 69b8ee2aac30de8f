"""A second primary's app (label ``billing``): tests.groups.settings puts it
on the ``billing`` primary with ``MULTIDB_PRIMARY_FOR``."""
