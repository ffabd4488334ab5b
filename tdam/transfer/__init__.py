"""Transfer experiments of the TDAM supplement §1.3: our ImageNet backbones in WS-DAN
(fine-grained: CUB-200-2011, Stanford Dogs) and with ASL (multi-label: MS-COCO 2014), trained by the shared trainer.

- :mod:`~tdam.transfer.wsdan`: attention maps, bilinear attention pooling, feature centers, attention crop / drop,
  test-time refinement, the WS-DAN training loss.
- :mod:`~tdam.transfer.asl`: timm's asymmetric loss configured as the original; ASL's mAP and CP/CR/CF1/OP/OR/OF1.
- :mod:`~tdam.transfer.tasks`: both as trainer tasks; :mod:`~tdam.transfer.run`: params files -> runs (a file's
  ``batch_size`` is the global batch); :mod:`~tdam.transfer.backbone`: which ImageNet checkpoint
  ``backbone_checkpoint`` names; :mod:`~tdam.transfer.cli`: ``python -m tdam.transfer``;
  :mod:`~tdam.transfer.report`: cached runs, tables, figures; :mod:`~tdam.transfer.notebook`: notebook 07.
- The input pipelines are ``tdam.data.build_transform(split, size, preset='wsdan' | 'asl')``.
"""
from tdam.transfer.asl import asymmetric_loss, average_precision_per_class, mean_average_precision, multilabel_prf
from tdam.transfer.backbone import Backbone, resolve_backbone
from tdam.transfer.models import build_asl_model, build_wsdan, load_backbone, load_wsdan
from tdam.transfer.notebook import TransferNotebookParams
from tdam.transfer.report import (TransferResult, crop_drop_examples, crop_drop_figure, crop_drop_figures,
                                  dataset_summary,
                                  ensure_transfer_run, results_table, save_results, setup_table)
from tdam.transfer.run import TransferConfig, build_task, build_transfer_datasets, load_transfer_config, run_transfer
from tdam.transfer.schedule import OneCycleSchedule
from tdam.transfer.tasks import ASLTask, WSDANTask
from tdam.transfer.wsdan import (WSDAN, WSDANOutput, attention_crop, attention_crop_boxes, attention_drop,
                                 bilinear_attention_pooling, center_loss, sample_attention_maps,
                                 update_feature_centers, wsdan_refined_logits, wsdan_training_loss)

__all__ = [
    "WSDAN", "WSDANOutput", "bilinear_attention_pooling", "sample_attention_maps", "attention_crop_boxes",
    "attention_crop", "attention_drop", "center_loss", "update_feature_centers", "wsdan_training_loss",
    "wsdan_refined_logits", "asymmetric_loss", "average_precision_per_class", "mean_average_precision",
    "multilabel_prf", "WSDANTask", "ASLTask", "OneCycleSchedule", "build_wsdan", "build_asl_model", "load_backbone",
    "load_wsdan", "TransferConfig", "load_transfer_config", "build_transfer_datasets", "build_task", "run_transfer",
    "TransferResult", "ensure_transfer_run", "results_table", "setup_table", "dataset_summary", "save_results",
    "crop_drop_examples",
    "crop_drop_figure", "crop_drop_figures", "TransferNotebookParams", "Backbone", "resolve_backbone",
]
