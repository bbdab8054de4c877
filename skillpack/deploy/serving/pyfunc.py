"""The registered model's pyfunc (MLflow "models from code": this file is copied into the
model, so loading it needs only onnxruntime, numpy and pandas): raw uint8 images in, a table
of the predicted class, its probability and every class's probability out.

    mlflow.pyfunc.load_model("models:/skillpack-classifier@candidate-onnx").predict(images)   # N x H x W x C uint8
    mlflow models serve -m models:/skillpack-classifier@candidate-onnx
"""
import json

import mlflow
import numpy as np
import pandas as pd


class OnnxImageClassifier(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import onnxruntime as ort

        self.session = ort.InferenceSession(context.artifacts["onnx"], providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        self.classes = json.loads(meta["classes"])

    def predict(self, context, model_input, params=None):
        pixels = np.ascontiguousarray(np.asarray(model_input, dtype=np.uint8))
        logits = self.session.run(["logits"], {"pixels": pixels})[0]
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
        best = probs.argmax(1)
        table = pd.DataFrame(probs, columns=[f"p_{name}" for name in self.classes])
        table.insert(0, "probability", probs[np.arange(len(probs)), best])
        table.insert(0, "class", [self.classes[k] for k in best])
        return table


mlflow.models.set_model(OnnxImageClassifier())
