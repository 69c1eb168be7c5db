import json,glob,os
ids=[l.split()[0] for l in open('/tmp/ab/paired.times') if l.count('/')==1 and not l.startswith('Sat')]
out=[]; bad=0
def load(side,tag):
    p=f'/tmp/ab/p-{side}/{tag}/results.json'
    return json.load(open(p)) if os.path.exists(p) else None
for id in ids:
    tag=id.replace('/','-')
    o=load('old',tag); n=load('new',tag)
    if not o or not n: out.append(f'| {id} | missing |'); continue
    for sect,metrics in [('steps',['ms_median','peak_heap_step_bytes']),('selection',['ms','peak_heap_bytes']),('encoders',['patches_per_s']),('inference',['ms_per_batch','peak_bytes'])]:
        for a,b in zip(o.get(sect,[]),n.get(sect,[])):
            for m in metrics:
                if m in a and a[m] is not None:
                    r=b[m]/a[m]
                    flag='' if abs(r-1)<=0.05 else 'outside 5 %'
                    if flag: bad+=1
                    unit={'ms_median':'ms','ms':'ms','ms_per_batch':'ms','patches_per_s':'patches/s'}.get(m,'bytes')
                    fmt=lambda v: f'{v:,.0f}' if unit!='bytes' else f'{v/2**20:,.1f} MiB'
                    out.append(f'| {id} | {m} | {fmt(a[m])} | {fmt(b[m])} | {r:.3f} | {flag} |')
print('\n'.join(out)); print('outside 5 %:',bad)
