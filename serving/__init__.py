"""A TensorFlow-Serving-compatible model server, its clients and deployment files.

* ``serving.server.ModelServer``: the embedded server (gRPC PredictionService and
  ModelService, gRPC health, REST, Prometheus metrics) over SavedModels in TF
  Serving's layout, configured by a ``models.config`` (ModelServerConfig text proto).
* ``serving.client.GrpcClient`` / ``serving.client.RestClient``: typed clients that
  work against this server and against ``tensorflow_model_server`` alike.
* ``serving/deploy/``: Docker Compose, models.config and batching parameters for the
  real TensorFlow Serving.

Nothing here imports the training code: a served model needs only its SavedModel.
Importing the server modules imports TensorFlow; import ``tfmodels`` first so
tf.keras is tf-keras (the server itself never builds Keras objects).
"""
