package eve

import (
	"maps"
	"slices"
	"strings"
	"time"

	eveinfo "github.com/lf-edge/eve-api/go/info"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pullwise/pullwise/host/app"
	"github.com/pullwise/pullwise/host/imagedigest"
)

// Info is the report as EVE's info messages: one ZInfoApp per app, one
// ZInfoVolume per volume, then one ZInfoContentTree per image (ContentTree uuid = ImageObjectID), whose
// sha256 is the manifest digest the tag resolved to: the design note's
// "report the SHA back to the controller". dev is the device's uuid; gens,
// when known, gives each tree's generation_count once the app has acted
// on it (its refresh counter acted upon has caught up).
func Info(info app.Info, dev string, gens *Generations) []*eveinfo.ZInfoMsg {
	at := timestamppb.New(info.GeneratedAt)
	var out []*eveinfo.ZInfoMsg
	state := map[string]app.AppInfo{}
	for _, a := range info.Apps {
		state[a.UUID] = a
		za := &eveinfo.ZInfoApp{AppID: a.UUID, AppName: a.DisplayName, State: appState(a.State)}
		if e := appErr(a); e != nil {
			za.AppErr = []*eveinfo.ErrorInfo{e}
		}
		for _, img := range info.Images {
			if img.App == a.UUID {
				za.VolumeRefs = append(za.VolumeRefs, img.ImageObjectID)
			}
		}
		out = append(out, &eveinfo.ZInfoMsg{Ztype: eveinfo.ZInfoTypes_ZiApp, DevId: dev, AtTimeStamp: at,
			InfoContent: &eveinfo.ZInfoMsg_Ainfo{Ainfo: za}})
	}
	// Volumes before trees: Adam's file store (v0.1.3) appends a device's
	// info messages to one file and reads the file back as one merged
	// message, so `adam admin device info` shows the last message of a
	// burst; the tree, with the resolved sha256, is the one that matters.
	out = append(out, volumes(info, dev, at, state, gens)...)
	for _, img := range info.Images {
		a := state[img.App]
		ct := &eveinfo.ZInfoContentTree{Uuid: img.ImageObjectID, DisplayName: img.Ref,
			Sha256: imagedigest.Hex(img.SHA256), State: treeState(a.State, img)}
		ct.ProgressPercentage = progress(ct.State, img)
		if gens != nil {
			if gen, ok := gens.Trees[img.ImageObjectID]; ok && a.Counters.RefreshImage >= gens.Refresh[a.UUID] {
				ct.GenerationCount = gen
			}
		}
		if strings.HasPrefix(img.LastCheckResult, "error: ") {
			ct.Err = &eveinfo.ErrorInfo{Description: strings.TrimPrefix(img.LastCheckResult, "error: "),
				Severity: eveinfo.Severity_SEVERITY_WARNING, RetryCondition: "the next check the policy asks for"}
			if img.LastCheck != nil {
				ct.Err.Timestamp = timestamppb.New(*img.LastCheck)
			}
		}
		out = append(out, &eveinfo.ZInfoMsg{Ztype: eveinfo.ZInfoTypes_ZiContentTree, DevId: dev, AtTimeStamp: at,
			InfoContent: &eveinfo.ZInfoMsg_Cinfo{Cinfo: ct}})
	}
	return out
}

// volumes are the configuration's volumes as ZInfoVolume: one that comes
// from a ContentTree follows its tree (downloading, then created once the
// app runs on it); a blank one is created once its app ran; either is in
// error while its app is and has nothing.
func volumes(info app.Info, dev string, at *timestamppb.Timestamp, state map[string]app.AppInfo, gens *Generations) []*eveinfo.ZInfoMsg {
	if gens == nil {
		return nil
	}
	var out []*eveinfo.ZInfoMsg
	for _, id := range slices.Sorted(maps.Keys(gens.Volumes)) {
		v := gens.Volumes[id]
		a, ok := state[v.App]
		if !ok {
			continue
		}
		zv := &eveinfo.ZInfoVolume{Uuid: id, DisplayName: v.Name, GenerationCount: v.Generation, State: eveinfo.ZSwState_INITIAL}
		created := len(a.Running) > 0
		if v.Tree != "" {
			for _, img := range info.Images {
				if img.App == v.App && img.ImageObjectID == v.Tree {
					ts := treeState(a.State, img)
					created = created && ts == eveinfo.ZSwState_LOADED
					if ts == eveinfo.ZSwState_DOWNLOAD_STARTED {
						zv.State, zv.ProgressPercentage = eveinfo.ZSwState_DOWNLOAD_STARTED, progress(ts, img)
					}
				}
			}
		}
		switch {
		case created:
			zv.State, zv.ProgressPercentage = eveinfo.ZSwState_CREATED_VOLUME, 100
		case a.State == app.StateError:
			zv.State, zv.VolumeErr = eveinfo.ZSwState_ERROR, appErr(a)
		}
		out = append(out, &eveinfo.ZInfoMsg{Ztype: eveinfo.ZInfoTypes_ZiVolume, DevId: dev, AtTimeStamp: at,
			InfoContent: &eveinfo.ZInfoMsg_Vinfo{Vinfo: zv}})
	}
	return out
}

// progress is a tree's download percentage: 100 once loaded, the bytes
// fetched of the known total while downloading (99 at most: the last
// percent is the unpack).
func progress(state eveinfo.ZSwState, img app.ImageInfo) uint32 {
	switch {
	case state == eveinfo.ZSwState_LOADED:
		return 100
	case state == eveinfo.ZSwState_DOWNLOAD_STARTED && img.Download != nil && img.Download.TotalBytes > 0:
		return uint32(min(99, img.Download.DoneBytes*100/img.Download.TotalBytes))
	}
	return 0
}

// appState maps an app's state to EVE's.
func appState(s string) eveinfo.ZSwState {
	switch s {
	case app.StateResolving:
		return eveinfo.ZSwState_RESOLVING_TAG
	case app.StateDownloading:
		return eveinfo.ZSwState_DOWNLOAD_STARTED
	case app.StateRunning, app.StateRolledBack, app.StateDeferred:
		// Running; a rollback or a deferral is said in appErr.
		return eveinfo.ZSwState_RUNNING
	case app.StateHalted:
		return eveinfo.ZSwState_HALTED
	case app.StateRestarting, app.StateRefreshing:
		return eveinfo.ZSwState_RESTARTING
	case app.StatePurging:
		return eveinfo.ZSwState_PURGING
	case app.StateError:
		return eveinfo.ZSwState_ERROR
	}
	return eveinfo.ZSwState_INITIAL
}

// treeState is a ContentTree's state: resolving, downloading, or loaded
// once it has a digest.
func treeState(appState string, img app.ImageInfo) eveinfo.ZSwState {
	switch {
	case appState == app.StateResolving:
		return eveinfo.ZSwState_RESOLVING_TAG
	case appState == app.StateDownloading:
		return eveinfo.ZSwState_DOWNLOAD_STARTED
	case img.SHA256 != "":
		return eveinfo.ZSwState_LOADED
	}
	return eveinfo.ZSwState_INITIAL
}

// appErr is the app's last error as EVE's ErrorInfo: a rollback or a
// deferral is a warning with the condition it is retried on; anything else
// an error.
func appErr(a app.AppInfo) *eveinfo.ErrorInfo {
	msg := a.LastError
	if msg == "" {
		msg = a.ConfigError
	}
	if msg == "" {
		return nil
	}
	e := &eveinfo.ErrorInfo{Description: msg, Severity: eveinfo.Severity_SEVERITY_ERROR}
	if a.LastErrorAt != nil {
		e.Timestamp = timestamppb.New(*a.LastErrorAt)
	}
	switch {
	case a.State == app.StateRolledBack:
		e.Severity, e.RetryCondition = eveinfo.Severity_SEVERITY_WARNING, "a refresh (ContentTree generation_count) after a fixed image is pushed"
	case a.RefreshDeferred && a.NextCheck != nil:
		e.Severity, e.RetryCondition = eveinfo.Severity_SEVERITY_NOTICE, "at "+a.NextCheck.UTC().Format(time.RFC3339)
	case a.ConfigError != "" && a.LastError == "":
		e.RetryCondition = "a corrected configuration"
	}
	return e
}
