"""Triton python-backend adapter for the guard model (see guard.serving, guard.protocol)."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from guard.protocol import INPUTS, INVALID_REQUEST, RawItem, encode_categories, verdict_word
from guard.serving import GuardService, ServiceConfig, instance_device


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        # One instance per GPU of the instance group: each loads onto its own device.
        device = instance_device(args["model_instance_kind"], args["model_instance_device_id"])
        self.service = GuardService.load(ServiceConfig.from_parameters(params, version_dir, device))

    def execute(self, requests):
        batches = []
        for request in requests:
            cols = [pb_utils.get_input_tensor_by_name(request, n) for n in INPUTS]
            if any(c is None for c in cols):
                batches.append(None)
                continue
            arrays = [c.as_numpy().reshape(-1) for c in cols]
            batches.append([RawItem(*(bytes(a[i]) for a in arrays)) for i in range(len(arrays[0]))])
        answers = iter(self.service.handle([b for b in batches if b is not None]))
        responses = []
        for items in batches:
            result = (
                INVALID_REQUEST + "needs " + ", ".join(INPUTS) if items is None else next(answers)
            )
            if isinstance(result, str):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(result)))
                continue
            columns = {
                "P_UNSAFE": np.array([[a.p_unsafe] for a in result], np.float32),
                "VERDICT": np.array([[verdict_word(a.unsafe)] for a in result], np.object_),
                "CATEGORIES": np.array(
                    [[encode_categories(a.categories)] for a in result], np.object_
                ),
                "PARSE_ERROR": np.array([[a.parse_error] for a in result], bool),
                "POLICY": np.array([[str(a.policy).encode()] for a in result], np.object_),
            }
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[pb_utils.Tensor(n, v) for n, v in columns.items()]
                )
            )
        return responses
