"""Triton python-backend adapter for the guard model (see guard.serving)."""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from guard.serving import INVALID_REQUEST, GuardService, RawItem, ServiceConfig

_INPUTS = ("CONVERSATION", "SIDE", "POLICY_ID")


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        version_dir = Path(args["model_repository"]) / args["model_version"]
        self.service = GuardService.load(ServiceConfig.from_parameters(params, version_dir))

    def execute(self, requests):
        batches = []
        for request in requests:
            cols = [pb_utils.get_input_tensor_by_name(request, n) for n in _INPUTS]
            if any(c is None for c in cols):
                batches.append(None)
                continue
            arrays = [c.as_numpy().reshape(-1) for c in cols]
            batches.append([RawItem(*(bytes(a[i]) for a in arrays)) for i in range(len(arrays[0]))])
        answers = iter(self.service.handle([b for b in batches if b is not None]))
        responses = []
        for items in batches:
            result = (
                INVALID_REQUEST + "needs CONVERSATION, SIDE and POLICY_ID"
                if items is None
                else next(answers)
            )
            if isinstance(result, str):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(result)))
                continue
            responses.append(
                pb_utils.InferenceResponse(
                    output_tensors=[
                        pb_utils.Tensor(
                            "P_UNSAFE", np.array([[a.p_unsafe] for a in result], np.float32)
                        ),
                        pb_utils.Tensor(
                            "VERDICT", np.array([[a.verdict] for a in result], np.object_)
                        ),
                        pb_utils.Tensor(
                            "CATEGORIES",
                            np.array([[a.categories_json] for a in result], np.object_),
                        ),
                        pb_utils.Tensor(
                            "PARSE_ERROR", np.array([[a.parse_error] for a in result], bool)
                        ),
                        pb_utils.Tensor(
                            "POLICY", np.array([[a.policy_ref] for a in result], np.object_)
                        ),
                    ]
                )
            )
        return responses
