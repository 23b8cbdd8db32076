"""Exports of pf-ray datasets to the layouts other code reads (``pf-ray export``)."""
