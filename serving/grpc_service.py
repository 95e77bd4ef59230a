"""gRPC front end: tensorflow.serving.PredictionService and ModelService.

Runs on the gRPC server's thread pool. Every failure is answered with a status
code and a message; no exception escapes to gRPC as UNKNOWN.
"""

from __future__ import annotations

import logging

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.config import validate_model_config
from serving.errors import ServingError, invalid
from serving.tensors import array_to_proto, proto_to_array

log = logging.getLogger("serving")


def spec_version(model_spec):
    """(version or None, label) from a ModelSpec."""
    which = model_spec.WhichOneof("version_choice")
    if which == "version":
        return model_spec.version.value, ""
    if which == "version_label":
        return None, model_spec.version_label
    return None, ""


def _abort(context, e: Exception):
    if isinstance(e, ServingError):
        context.abort(e.code, e.message)
    log.exception("internal error")
    context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}")


def signature_def_map(served):
    m = get_model_metadata_pb2.SignatureDefMap()
    for k, v in served.signature_defs.items():
        m.signature_def[k].CopyFrom(v)
    return m


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, core):
        self.core = core

    def Predict(self, request, context):
        try:
            with self.core.track("grpc", request.model_spec.name, request.model_spec.signature_name) as info:
                version, label = spec_version(request.model_spec)
                served, key = self.core.resolve(request.model_spec.name, version, label,
                                                request.model_spec.signature_name)
                info.update(model=served.name, signature=key)
                # The client's deadline bounds the run (TF Serving sets the session-run
                # timeout from it); without one, the server's request timeout does. A
                # cancelled or expired RPC cancels the run through the termination callback.
                remaining = context.time_remaining()
                call = self.core.call(self.core.request_timeout if remaining is None else remaining)
                context.add_callback(lambda: call.cancel("the RPC ended (cancelled or past its deadline)"))
                limit = self.core.max_request_bytes
                inputs = {k: proto_to_array(k, v, limit) for k, v in request.inputs.items()}
                outputs = self.core.run(served, key, inputs, list(request.output_filter), call)
                response = predict_pb2.PredictResponse()
                response.model_spec.name = served.name
                response.model_spec.version.value = served.version
                response.model_spec.signature_name = key
                for k, v in outputs.items():
                    response.outputs[k].CopyFrom(array_to_proto(v))
                return response
        except Exception as e:
            _abort(context, e)

    def GetModelMetadata(self, request, context):
        try:
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise invalid(f"metadata_field must be exactly ['signature_def'], got {fields}")
            version, label = spec_version(request.model_spec)
            served = self.core.manager.resolve(request.model_spec.name, version, label)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = served.name
            response.model_spec.version.value = served.version
            response.metadata["signature_def"].Pack(signature_def_map(served))
            return response
        except Exception as e:
            _abort(context, e)

    def _unimplemented(self, what, context):
        context.abort(grpc.StatusCode.UNIMPLEMENTED,
                      f"{what} is not implemented by this server; the exported models have no "
                      "classification/regression signatures: use Predict")

    def Classify(self, request, context):
        self._unimplemented("Classify", context)

    def Regress(self, request, context):
        self._unimplemented("Regress", context)

    def MultiInference(self, request, context):
        self._unimplemented("MultiInference", context)


def status_response(manager, name, version, label):
    response = get_model_status_pb2.GetModelStatusResponse()
    for v, state, msg in manager.status(name, version, label):
        s = response.model_version_status.add()
        s.version = v
        s.state = state
        s.status.error_code = 0 if not msg else 13  # OK / INTERNAL (load failure)
        s.status.error_message = msg
    return response


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, core, allow_reload_config: bool = True):
        self.core, self.allow_reload_config = core, allow_reload_config

    def GetModelStatus(self, request, context):
        try:
            version, label = spec_version(request.model_spec)
            return status_response(self.core.manager, request.model_spec.name, version, label)
        except Exception as e:
            _abort(context, e)

    def HandleReloadConfigRequest(self, request, context):
        response = model_management_pb2.ReloadConfigResponse()
        if not self.allow_reload_config:
            response.status.error_code = grpc.StatusCode.PERMISSION_DENIED.value[0]
            response.status.error_message = "HandleReloadConfigRequest is disabled on this server"
            return response
        try:
            config = validate_model_config(request.config, source="ReloadConfigRequest")
        except ValueError as e:
            response.status.error_code = grpc.StatusCode.INVALID_ARGUMENT.value[0]
            response.status.error_message = str(e)
            return response
        try:
            self.core.manager.reload(config)
        except ServingError as e:  # e.g. a label pointing at a version that did not load
            response.status.error_code = e.code.value[0]
            response.status.error_message = e.message
        except Exception as e:
            log.exception("reload failed")
            response.status.error_code = grpc.StatusCode.INTERNAL.value[0]
            response.status.error_message = f"{type(e).__name__}: {e}"
        return response
