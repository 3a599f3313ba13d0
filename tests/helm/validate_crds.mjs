// Validates custom resources against their CRDs' OpenAPI schemas, with the models published on
// npm (@kubernetes-models/prometheus-operator, @kubernetes-models/keda; no cluster needed).
// Usage: node validate_crds.mjs NODE_MODULES_DIR < resources.json   (a JSON array of objects)
// Prints a JSON array of {kind, name, error} (error null when valid).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const load = (pkg, group) => import(pathToFileURL(join(modules, "@kubernetes-models", pkg, group, "index.js")).href);
const models = {
  "monitoring.coreos.com/v1": await load("prometheus-operator", "monitoring.coreos.com/v1"),
  "keda.sh/v1alpha1": await load("keda", "keda.sh/v1alpha1"),
};
const resources = JSON.parse(readFileSync(0, "utf8"));
const results = resources.map((resource) => {
  const group = models[resource.apiVersion];
  const Model = group && group[resource.kind];
  if (!Model) return { kind: resource.kind, name: resource.metadata?.name, error: `no model for ${resource.apiVersion} ${resource.kind}` };
  try {
    new Model(resource).validate();
    return { kind: resource.kind, name: resource.metadata.name, error: null };
  } catch (e) {
    return { kind: resource.kind, name: resource.metadata?.name, error: e.message };
  }
});
console.log(JSON.stringify(results));
