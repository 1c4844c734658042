// Package modules keeps the policy modules that configurations name by an
// OCI reference with a digest: it fetches each one once through the images'
// registry client, checks it against the digest (and, when the device
// trusts keys, its cosign signature), and keeps it in the state directory,
// so a device runs it offline from then on. It also makes the artifact that
// `pullwise policy push` publishes.
package modules

import (
	"encoding/json"
	"fmt"
	"strconv"

	godigest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/pullwise/pullwise/sdk"
)

// The artifact's media types. The config and layer types are the CNCF Wasm
// OCI artifact's (tag-and-digest tooling that knows Wasm shows the module),
// the artifact type is pullwise's own: a registry listing or a referrers
// query tells a policy module from other Wasm.
const (
	ArtifactType    = "application/vnd.pullwise.policy.v1+wasm"
	ConfigMediaType = "application/vnd.wasm.config.v0+json"
	LayerMediaType  = "application/wasm"
	// AnnotationABIVersion carries the module's ABI version.
	AnnotationABIVersion = "io.pullwise.policy.abi-version"
)

// Artifact is a policy module as an OCI artifact: the manifest, its config
// and the one layer, the module's bytes.
type Artifact struct {
	Manifest     ocispec.Descriptor
	ManifestBody []byte
	Config       ocispec.Descriptor
	ConfigBody   []byte
	Layer        ocispec.Descriptor
}

// NewArtifact makes the artifact for a module and its metadata. The same
// module gives the same bytes, so pushing it again names the same digest.
func NewArtifact(wasm []byte, md sdk.Metadata) (Artifact, error) {
	layer := ocispec.Descriptor{MediaType: LayerMediaType, Digest: godigest.FromBytes(wasm), Size: int64(len(wasm)),
		Annotations: map[string]string{ocispec.AnnotationTitle: md.Name + ".wasm"}}
	config, err := json.Marshal(map[string]any{"architecture": "wasm", "os": "wasip1", "layerDigests": []string{layer.Digest.String()}})
	if err != nil {
		return Artifact{}, err
	}
	a := Artifact{ConfigBody: config, Layer: layer,
		Config: ocispec.Descriptor{MediaType: ConfigMediaType, Digest: godigest.FromBytes(config), Size: int64(len(config))}}
	annotations := map[string]string{
		ocispec.AnnotationTitle:   md.Name,
		ocispec.AnnotationVersion: md.Version,
		AnnotationABIVersion:      strconv.Itoa(md.ABIVersion),
	}
	if md.Description != "" {
		annotations[ocispec.AnnotationDescription] = md.Description
	}
	m := ocispec.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    ocispec.MediaTypeImageManifest,
		ArtifactType: ArtifactType,
		Config:       a.Config,
		Layers:       []ocispec.Descriptor{layer},
		Annotations:  annotations,
	}
	if a.ManifestBody, err = json.Marshal(m); err != nil {
		return Artifact{}, err
	}
	a.Manifest = ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: godigest.FromBytes(a.ManifestBody),
		Size: int64(len(a.ManifestBody)), ArtifactType: ArtifactType}
	return a, nil
}

// ModuleLayer finds the module in a manifest: its one application/wasm
// layer.
func ModuleLayer(body []byte) (ocispec.Descriptor, error) {
	var m ocispec.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("the manifest does not parse: %w", err)
	}
	var found []ocispec.Descriptor
	for _, l := range m.Layers {
		if l.MediaType == LayerMediaType {
			found = append(found, l)
		}
	}
	if len(found) != 1 {
		return ocispec.Descriptor{}, fmt.Errorf("not a policy module: the manifest has %d %s layers, want 1 (publish modules with `pullwise policy push`)", len(found), LayerMediaType)
	}
	return found[0], nil
}
