# Targets of the Kubernetes deployment (MODE=k8s): the Helm release on Minikube (or any
# cluster kubectl points at). kdsctl-based targets (metadata, monitor, test-*) reach
# LocalStack at AWS_ENDPOINT_URL, by default localhost:4566 through
# `make port-forward-localstack`.
NAMESPACE   ?= kds-test
RELEASE     ?= kds-consumer
CHART       := deploy/helm/kds-lease-manager
IMAGE       ?= kds-consumer-test
TAG         ?= latest
# The chart names the StatefulSet (and the worker ids) after the release.
STATEFULSET ?= $(RELEASE)
HELM_ARGS   ?=
export NAMESPACE RELEASE STATEFULSET IMAGE TAG HELM_ARGS
# kubectl and helm from PATH first, else the ones `make k8s-tools` built.
export PATH := $(PATH):$(or $(KDS_K8S_CACHE_DIR),$(HOME)/.cache/kds-lease-manager/k8s)/bin
KUBE := kubectl -n $(NAMESPACE)
HELM_INSTALL := helm upgrade --install $(RELEASE) $(CHART) -n $(NAMESPACE) --create-namespace \
	--set createNamespace=false --set namespace=$(NAMESPACE) \
	--set consumer.image.repository=$(IMAGE) --set consumer.image.tag=$(TAG) $(HELM_ARGS)

.PHONY: setup image deploy install helm-upgrade helm-lint helm-template restart start-minikube \
	stop-minikube delete-minikube port-forward-localstack shell-localstack shell-worker \
	k8s-status k8s-logs k8s-logs-worker k8s-restart-worker k8s-restart-all k8s-clean

setup: ## k8s: start Minikube, build the image in it, install the release, wait for the workers
	$(SCRIPTS)/setup.sh

image: ## k8s: build the worker image (IMAGE=kds-consumer-test TAG=latest); on Minikube, after pointing docker at it with minikube docker-env
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) -t $(IMAGE):$(TAG) .

deploy: ## k8s: install or upgrade the Helm release (no wait)
	$(HELM_INSTALL)

install: deploy ## k8s: same as deploy

helm-upgrade: ## k8s: upgrade the release with HELM_ARGS (e.g. HELM_ARGS='--set consumer.replicaCount=5')
	helm upgrade $(RELEASE) $(CHART) -n $(NAMESPACE) --reset-then-reuse-values $(HELM_ARGS)

helm-lint: ## lint the chart
	helm lint $(CHART) --strict

helm-template: ## render the chart to stdout
	helm template $(RELEASE) $(CHART) -n $(NAMESPACE) --set namespace=$(NAMESPACE) $(HELM_ARGS)

restart: k8s-clean deploy ## k8s: uninstall and install again

start-minikube: ## k8s: start Minikube (MINIKUBE_CPUS=4 MINIKUBE_MEMORY=6g)
	minikube start --cpus=$${MINIKUBE_CPUS:-4} --memory=$${MINIKUBE_MEMORY:-6g}

stop-minikube: ## k8s: stop Minikube
	minikube stop

delete-minikube: ## k8s: delete the Minikube cluster
	minikube delete

port-forward-localstack: ## k8s: LocalStack on localhost:4566 (keep it running)
	$(KUBE) port-forward svc/$(STATEFULSET)-localstack 4566:4566

shell-localstack: ## k8s: a shell in the LocalStack pod
	$(KUBE) exec -it deploy/$(STATEFULSET)-localstack -- bash

# The worker image is distroless (no shell): attach a busybox debug container to the pod.
shell-worker: ## k8s: a shell next to a worker (ephemeral debug container): W=0
	$(KUBE) debug -it $(STATEFULSET)-$(W) --image=busybox:1.37.0 --target=kds-consumer -- sh

k8s-status:
	$(KUBE) get statefulset,pods,service,job,deployment -l app.kubernetes.io/instance=$(RELEASE) -o wide

k8s-logs:
	$(KUBE) logs -f -l app.kubernetes.io/component=consumer --prefix --max-log-requests=100 --tail=20

k8s-logs-worker:
	$(KUBE) logs -f $(STATEFULSET)-$(W)

k8s-restart-worker:
	$(KUBE) delete pod $(STATEFULSET)-$(W)

k8s-restart-all:
	$(KUBE) rollout restart statefulset/$(STATEFULSET)

k8s-clean:
	$(SCRIPTS)/cleanup.sh
