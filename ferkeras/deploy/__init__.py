"""After training: export, quantize, and predict with onnxruntime (no TensorFlow).

    export.py     SavedModel + ONNX export with a parity check
    quantize.py   int8 static quantization of an export
    inference.py  `ONNXPredictor`, frame sources, the predict loop
    detection.py  face detectors (BlazeFace ONNX, OpenCV Haar)
    session.py    the onnxruntime session both models run in
    faces.py      face boxes -> model input crops (`crop_face`; eye alignment is
                  `ferkeras.data.alignment`, shared with the training pipeline)
    flip_average.py  the mean of a face's and its mirror's probabilities, baked into ONNX

The shipped model files stay in `ferkeras/pretrained/` (package data, with its lookup).
"""
