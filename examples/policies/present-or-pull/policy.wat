;; present-or-pull: a pullwise policy written in WebAssembly text from
;; sdk/ABI.md alone (no SDK, no JSON library), to show the ABI is complete
;; for any language. It uses the image on disk if there is one and pulls an
;; absent image (a failed pull fails the app); it never asks the registry
;; about an image it has. After a failed pull it fails the app; after a
;; failed start on a new image it rolls back. It takes no settings.
;;
;; It reads the input as text: the host sends compact JSON (sdk/ABI.md,
;; "Input"), and leaves out empty fields, so "the image is on disk" is
;; "the input has a localDigest field".
;;
;; Build: wat2wasm policy.wat -o present-or-pull.wasm
;;        pullwise policy annotate present-or-pull.wasm --metadata metadata.json
;; Test:  pullwise policy test present-or-pull.wasm --cases testdata/cases.yaml
(module
  ;; Page 0 holds the constants below; page 1 is the input buffer.
  (memory (export "memory") 2)

  ;; needle_local: offset 16, 15 bytes
  (data (i32.const 16) "\"localDigest\":\"")
  ;; needle_pullfailed: offset 47, 21 bytes
  (data (i32.const 47) "\"event\":\"pull-failed\"")
  ;; needle_startfailed: offset 84, 22 bytes
  (data (i32.const 84) "\"event\":\"start-failed\"")
  ;; answer_uselocal: offset 122, 128 bytes
  (data (i32.const 122) "{\"action\":\"use-local\",\"restartOnChange\":false,\"reason\":\"the image is on disk; present-or-pull never asks the registry about it\"}")
  ;; answer_pull: offset 266, 103 bytes
  (data (i32.const 266) "{\"action\":\"pull\",\"restartOnChange\":true,\"onPullFailure\":\"fail\",\"reason\":\"the image is absent; pulling\"}")
  ;; answer_fail: offset 385, 110 bytes
  (data (i32.const 385) "{\"action\":\"fail\",\"restartOnChange\":false,\"reason\":\"the pull failed; present-or-pull does not retry by itself\"}")
  ;; answer_rollback: offset 511, 102 bytes
  (data (i32.const 511) "{\"action\":\"rollback\",\"restartOnChange\":false,\"reason\":\"the app failed on its new image; rolling back\"}")
  ;; settings_valid: offset 629, 14 bytes
  (data (i32.const 629) "{\"valid\":true}")
  ;; settings_invalid: offset 659, 61 bytes
  (data (i32.const 659) "{\"valid\":false,\"message\":\"present-or-pull takes no settings\"}")

  (func (export "pullwise_abi_version") (result i32) (i32.const 1))

  ;; One input buffer, reused for every call (ABI.md, "Memory"). An input
  ;; larger than it cannot be taken: trap, and the host reports the fault.
  (func (export "pullwise_alloc") (param $size i32) (result i32)
    (if (i32.gt_u (local.get $size) (i32.const 65536)) (then (unreachable)))
    (i32.const 65536))

  ;; contains reports whether hay[0:hayLen] holds needle[0:needleLen].
  (func $contains (param $hay i32) (param $hayLen i32) (param $needle i32) (param $needleLen i32) (result i32)
    (local $i i32) (local $j i32)
    (block $notFound
      (loop $outer
        (br_if $notFound (i32.gt_u (i32.add (local.get $i) (local.get $needleLen)) (local.get $hayLen)))
        (local.set $j (i32.const 0))
        (block $mismatch
          (loop $inner
            (if (i32.eq (local.get $j) (local.get $needleLen)) (then (return (i32.const 1))))
            (br_if $mismatch (i32.ne
              (i32.load8_u (i32.add (local.get $hay) (i32.add (local.get $i) (local.get $j))))
              (i32.load8_u (i32.add (local.get $needle) (local.get $j)))))
            (local.set $j (i32.add (local.get $j) (i32.const 1)))
            (br $inner)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $outer)))
    (i32.const 0))

  ;; The answer's address in the high 32 bits, its length in the low 32.
  (func (export "pullwise_decide") (param $ptr i32) (param $len i32) (result i64)
    (if (call $contains (local.get $ptr) (local.get $len) (i32.const 47) (i32.const 21))
      (then (return (i64.or (i64.shl (i64.const 385) (i64.const 32)) (i64.const 110)))))
    (if (call $contains (local.get $ptr) (local.get $len) (i32.const 84) (i32.const 22))
      (then (return (i64.or (i64.shl (i64.const 511) (i64.const 32)) (i64.const 102)))))
    (if (call $contains (local.get $ptr) (local.get $len) (i32.const 16) (i32.const 15))
      (then (return (i64.or (i64.shl (i64.const 122) (i64.const 32)) (i64.const 128)))))
    (i64.or (i64.shl (i64.const 266) (i64.const 32)) (i64.const 103)))

  ;; No settings: the host passes zero bytes when the configuration gives
  ;; none (ABI.md, "Settings result"); "{}" is accepted too.
  (func (export "pullwise_validate_settings") (param $ptr i32) (param $len i32) (result i64)
    (if (i32.eqz (local.get $len)) (then (return (i64.or (i64.shl (i64.const 629) (i64.const 32)) (i64.const 14)))))
    (if (i32.and (i32.eq (local.get $len) (i32.const 2))
                 (i32.eq (i32.load16_u (local.get $ptr)) (i32.const 0x7d7b)))
      (then (return (i64.or (i64.shl (i64.const 629) (i64.const 32)) (i64.const 14)))))
    (i64.or (i64.shl (i64.const 659) (i64.const 32)) (i64.const 61)))
)
