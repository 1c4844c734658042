package agent

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/internal/atomicfile"
)

// statusFile is STATE/status.json: the report, written whole (a temporary
// file renamed over it) when something in it changed but a time. It is
// kept per app: an app's part is marshalled again only when its report
// moved (AppInfo.Revision, its config error) and an image's only when it
// is not Equal to the one kept, so an action on one app of fifty marshals
// that app and its images, not fifty. The file is the same,
// byte for byte, as json.MarshalIndent of the whole status with two
// spaces (a test holds it).
type statusFile struct {
	path string
	apps map[string]*appPart // by app uuid: the parts last built
	// written is what the file last held, its times left out: the agent
	// part, then each app's and its images' keys in order.
	written [][]byte
}

// appPart is one app's part of the file.
type appPart struct {
	rev         uint64
	configError string
	// key is the app without the times that change when nothing else
	// does; doc the app as written, indented at its depth.
	key, doc []byte
	images   []imagePart
}

// imagePart is one image's part, kept while the image is Equal to it.
type imagePart struct {
	info     app.ImageInfo
	key, doc []byte
}

// Depths of the file's parts, in indent steps, as MarshalIndent writes
// them: the agent part is a field of the top object, apps and images are
// elements of arrays in the info object.
const (
	indentStep  = "  "
	agentDepth  = 1
	elemDepth   = 3
	elemNewline = "\n" + indentStep + indentStep + indentStep
)

func newStatusFile(path string) *statusFile {
	return &statusFile{path: path, apps: map[string]*appPart{}}
}

// write writes st unless only times changed since the last write. It
// reports whether it wrote.
func (f *statusFile) write(st Status) (bool, error) {
	agentDoc := indented(st.Agent, agentDepth)
	keys := [][]byte{agentDoc}
	images := imagesByApp(st.Info.Images)
	seen := make(map[string]bool, len(st.Info.Apps))
	parts := make([]*appPart, 0, len(st.Info.Apps))
	for _, a := range st.Info.Apps {
		p := f.part(a, images[a.UUID])
		seen[a.UUID] = true
		parts = append(parts, p)
		keys = append(keys, p.key)
		for _, im := range p.images {
			keys = append(keys, im.key)
		}
	}
	for id := range f.apps {
		if !seen[id] {
			delete(f.apps, id) // the app left the configuration
		}
	}
	if slices.EqualFunc(keys, f.written, bytes.Equal) {
		return false, nil
	}
	var b bytes.Buffer
	b.WriteString("{\n" + indentStep + `"agent": `)
	b.Write(agentDoc)
	b.WriteString(",\n" + indentStep + `"info": {` + "\n" + indentStep + indentStep + `"generatedAt": `)
	at, _ := json.Marshal(st.Info.GeneratedAt)
	b.Write(at)
	b.WriteString(",\n" + indentStep + indentStep + `"apps": `)
	writeArray(&b, st.Info.Apps == nil, func(yield func([]byte)) {
		for _, p := range parts {
			yield(p.doc)
		}
	})
	b.WriteString(",\n" + indentStep + indentStep + `"images": `)
	writeArray(&b, st.Info.Images == nil, func(yield func([]byte)) {
		// In the report's order: by app uuid, each app's images together.
		done := map[string]bool{}
		for _, im := range st.Info.Images {
			switch p := f.apps[im.App]; {
			case done[im.App]:
			case p != nil && seen[im.App]:
				done[im.App] = true
				for _, im := range p.images {
					yield(im.doc)
				}
			default: // an image without its app (Info lists none today)
				yield(indented(im, elemDepth))
			}
		}
	})
	b.WriteString("\n" + indentStep + "}\n}")
	if err := atomicfile.Write(f.path, b.Bytes(), false); err != nil {
		return false, err
	}
	f.written = keys
	return true, nil
}

// part is app a's part, built again where it moved.
func (f *statusFile) part(a app.AppInfo, images []app.ImageInfo) *appPart {
	p := f.apps[a.UUID]
	if p == nil {
		p = &appPart{}
		f.apps[a.UUID] = p
	}
	if p.key == nil || p.rev != a.Revision || p.configError != a.ConfigError {
		p.rev, p.configError = a.Revision, a.ConfigError
		p.doc = indented(a, elemDepth)
		p.key, _ = json.Marshal(appKey(a))
	}
	kept := p.images
	p.images = make([]imagePart, len(images))
	for i, im := range images {
		if i < len(kept) && kept[i].info.Equal(im) {
			p.images[i] = kept[i]
			continue
		}
		p.images[i] = imagePart{info: im, doc: indented(im, elemDepth)}
		p.images[i].key, _ = json.Marshal(imageKey(im))
	}
	return p
}

// appKey is an app's report without the times of decisions, which move
// with every check that found nothing new: such a check writes nothing,
// because flash wears. The live report (`pullwise status`, from the API)
// always has them.
func appKey(a app.AppInfo) app.AppInfo {
	if len(a.Decisions) > 0 {
		ds := make(map[string]app.DecisionInfo, len(a.Decisions))
		for k, d := range a.Decisions {
			d.At = time.Time{}
			ds[k] = d
		}
		a.Decisions = ds
	}
	return a
}

// imageKey is the same for an image: without the last check's time and
// the decision's.
func imageKey(im app.ImageInfo) app.ImageInfo {
	im.LastCheck = nil
	if im.Decision != nil {
		d := *im.Decision
		d.At = time.Time{}
		im.Decision = &d
	}
	return im
}

// imagesByApp groups the report's images by app, in their order.
func imagesByApp(images []app.ImageInfo) map[string][]app.ImageInfo {
	out := map[string][]app.ImageInfo{}
	for _, im := range images {
		out[im.App] = append(out[im.App], im)
	}
	return out
}

// indented is v as MarshalIndent writes it at depth (its first line
// unprefixed, as it follows a key or an array's indent).
func indented(v any, depth int) []byte {
	raw, _ := json.Marshal(v)
	var b bytes.Buffer
	json.Indent(&b, raw, strings.Repeat(indentStep, depth), indentStep)
	return b.Bytes()
}

// writeArray writes the elements as MarshalIndent writes an array at the
// info object's depth: null when nil, [] when empty.
func writeArray(b *bytes.Buffer, isNil bool, elems func(yield func([]byte))) {
	if isNil {
		b.WriteString("null")
		return
	}
	n := 0
	elems(func(d []byte) {
		if n == 0 {
			b.WriteString("[")
		} else {
			b.WriteString(",")
		}
		b.WriteString(elemNewline)
		b.Write(d)
		n++
	})
	if n == 0 {
		b.WriteString("[]")
		return
	}
	b.WriteString("\n" + indentStep + indentStep + "]")
}
