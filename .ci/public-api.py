# Lists the public API of session_stores from rustdoc JSON: one line per public path,
# with its kind and signature. Used by .ci/public-api.sh.
import json, sys
d = json.load(open(sys.argv[1]))
idx = d['index']; root = d['root']
out = set()
def sig(item):
    inner = item['inner']
    k = list(inner.keys())[0]
    v = inner[k]
    if k == 'function':
        s = v['sig']
        return k + ' ' + json.dumps([s['inputs'], s['output'], v.get('generics'), v['header']], sort_keys=True)
    if k in ('struct','enum','trait','constant','static','type_alias','variant','struct_field'):
        if k == 'constant':
            return k + ' ' + json.dumps(v.get('type'), sort_keys=True)
        if k == 'struct_field':
            return k + ' ' + json.dumps(v, sort_keys=True)
        if k == 'struct':
            return k + ' ' + json.dumps(v.get('kind') if not isinstance(v.get('kind'),dict) or 'plain' not in v['kind'] else {'plain_fields_stripped': v['kind']['plain'].get('has_stripped_fields')}, sort_keys=True) + json.dumps(v.get('generics'), sort_keys=True)
        return k
    return k
def visit(iid, path, seen):
    if iid in seen: return
    seen = seen | {iid}
    item = idx.get(str(iid))
    if item is None: return
    inner = item['inner']; k = list(inner.keys())[0]; v = inner[k]
    if k == 'module' and iid == root:
        for c in v['items']:
            visit(c, path, seen)
        return
    if k == 'use':
        name = v['name']
        tgt = v.get('id')
        if tgt is None: return
        t = idx.get(str(tgt))
        if t is None:
            out.add('::'.join(path+[name]) + ' use-external ' + v['source']); return
        tk = list(t['inner'].keys())[0]
        if tk == 'module':
            if v.get('is_glob'):
                visit(tgt, path, seen)
            else:
                out.add('::'.join(path+[name]) + ' module')
                for c in t['inner']['module']['items']:
                    visit(c, path+[name], seen)
        else:
            visit_item(t, path+[name], seen)
        return
    if item.get('visibility') != 'public': return
    visit_item(item, path+[item['name']], seen)
def visit_item(item, path, seen):
    inner = item['inner']; k = list(inner.keys())[0]; v = inner[k]
    if k == 'module':
        out.add('::'.join(path) + ' module')
        for c in v['items']: visit(c, path, seen)
        return
    out.add('::'.join(path) + ' ' + sig(item))
    if k in ('struct','enum','union'):
        impls = v.get('impls', [])
        if k == 'enum':
            for var in v['variants']:
                vi = idx[str(var)]
                out.add('::'.join(path+[vi['name']]) + ' variant ' + json.dumps(vi['inner']['variant']['kind'] if isinstance(vi['inner']['variant']['kind'],str) else list(vi['inner']['variant']['kind'].keys()), sort_keys=True))
        if k == 'struct' and isinstance(v.get('kind'),dict) and 'plain' in v['kind']:
            for f in v['kind']['plain']['fields']:
                fi = idx[str(f)]
                if fi.get('visibility') == 'public':
                    out.add('::'.join(path+[fi['name']]) + ' field ' + json.dumps(fi['inner'], sort_keys=True))
        for im in impls:
            ii = idx[str(im)]['inner']['impl']
            if ii.get('is_synthetic') or ii.get('blanket_impl'): continue
            tr = ii.get('trait')
            if tr:
                out.add('::'.join(path) + ' impl ' + tr['path'])
                continue
            for m in ii['items']:
                mi = idx[str(m)]
                if mi.get('visibility') == 'public':
                    out.add('::'.join(path+[mi['name']]) + ' ' + sig(mi) + (' deprecated' if mi.get('deprecation') else ''))
    if k == 'trait':
        for m in v['items']:
            mi = idx[str(m)]
            out.add('::'.join(path+[mi['name']]) + ' ' + sig(mi))
visit(root, ['session_stores'], frozenset())
for line in sorted(out): print(line)
