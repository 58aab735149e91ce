// CIDs from the reference UnixFS importer (ipfs-unixfs-importer, the js implementation of
// what `ipfs add` does), for tests/test_ipfs.py. Reads a JSON job on stdin:
//   {"layouts": [{name, cidVersion, chunkSize, rawLeaves, maxLinks}], "paths": [...],
//    "root": folder or null}  (paths may name folders, empty ones included)
// and prints {layoutName: {path: cid}} with every file's and folder's CID as imported.
import { importer } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'
import * as fs from 'node:fs'
import * as path from 'node:path'

const job = JSON.parse(fs.readFileSync(0, 'utf8'))
// Blocks are only hashed here, not kept.
const blockstore = { put: async (cid) => cid }
const out = {}
for (const lay of job.layouts) {
  const source = job.paths.map((p) => {
    const name = job.root ? path.relative(path.dirname(job.root), p) : path.basename(p)
    // A folder is given without content (an empty one has no file to bring it in).
    return fs.statSync(p).isDirectory()
      ? { path: name }
      : { path: name, content: fs.createReadStream(p, { highWaterMark: 1 << 20 }) }
  })
  const cids = {}
  for await (const entry of importer(source, blockstore, {
    cidVersion: lay.cidVersion,
    rawLeaves: lay.rawLeaves,
    leafType: 'file',
    reduceSingleLeafToSelf: true,
    chunker: fixedSize({ chunkSize: lay.chunkSize }),
    layout: balanced({ maxChildrenPerNode: lay.maxLinks }),
    shardSplitThresholdBytes: 262144,
    shardSplitStrategy: 'links-bytes'
  })) {
    cids[entry.path] = entry.cid.toString()
  }
  out[lay.name] = cids
}
process.stdout.write(JSON.stringify(out))
