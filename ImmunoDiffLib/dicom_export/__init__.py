"""A case's outputs in radiology's own format (``predict --dicom``): the synthesized follow-up
as a derived CT series in the baseline's study, lobes, vessels and tumour as one DICOM SEG, the
predictions as a DICOM SR (TID 1500), the report picture as a Secondary Capture.

``identity`` (patient, study and frame of reference, read from the input series or
generated), ``derived_series`` (CT slices), ``segmentation`` (SEG), ``report`` (SR and
Secondary Capture), ``equipment`` (what the outputs say made them), ``write`` (the folder of
one case). Import from the modules themselves: this file imports nothing.
"""
