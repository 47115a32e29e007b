"""Pictures people look at, each a PNG of a documented pixel size (matplotlib Agg / Pillow):

- :mod:`~vireid.viz.curves` -- training curves from ``metrics.jsonl``;
- :mod:`~vireid.viz.ranking` -- ranked lists (query + top-k gallery, green/red frames);
- :mod:`~vireid.viz.cmc` -- CMC curves of one or several runs;
- :mod:`~vireid.viz.cam` -- Grad-CAM heatmaps over visible and infrared images (grad-cam library);
- :mod:`~vireid.viz.rollout` -- attention rollout heatmaps for transformer backbones (ViT, CLIP ViT);
- :mod:`~vireid.viz.embedding` -- t-SNE map of embeddings (colour = identity, marker = modality);
- :mod:`~vireid.viz.roc` -- verification ROC curves;
- :mod:`~vireid.viz.report` -- the self-contained HTML run report;
- :mod:`~vireid.viz.data` -- a run's model and test-set features, loaded once for all pictures.
"""
