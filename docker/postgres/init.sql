-- Run once by the postgres image on an empty data volume (as POSTGRES_USER): MLflow uses the
-- database POSTGRES_DB (mlflow), the Prefect server this one.
CREATE DATABASE prefect;
-- Optuna's studies when `skillpack tune` workers run on several machines (params tune.storage)
CREATE DATABASE optuna;
