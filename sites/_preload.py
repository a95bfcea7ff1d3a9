"""What the fork server of ``sites/forked.py`` imports before it forks nodes: everything a node imports."""

import gc

import monai.networks.blocks  # noqa: F401 - the segments' building blocks

import data_adapters.site_data  # noqa: F401 - a site's data pipeline (pandas, pydicom, MONAI transforms)
import medsplit.runtime  # noqa: F401
import sites.cli  # noqa: F401
import sites.nodes  # noqa: F401

# Objects made so far are never collected: the collector would otherwise touch (and so copy) the pages they
# live on in every forked process.
gc.freeze()
