// Module ids from readable names, not hashes of absolute paths: the prebuilt extension is
// then the same wherever lab/ is built (CI rebuilds it in a fresh clone and compares).
module.exports = {
  optimization: { moduleIds: 'named', chunkIds: 'named' }
};
