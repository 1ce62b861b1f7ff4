"""invdiff.pipelines: scans in and out, MONAI transforms and bundles, and the ``invdiff`` CLI."""
