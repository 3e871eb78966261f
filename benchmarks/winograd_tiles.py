import numpy as np, cconv, sys
cconv.set_num_threads(int(sys.argv[1])); cconv.set_autotune(True)
rng=np.random.default_rng(0)
for C in (32, 64,128,256,512):
    for H in (2,4,6,8,12,16):
        for N in (1,2,4):
            tiles=N*((H+1)//2)**2
            if tiles>64: continue
            x=rng.standard_normal((N,C,H,H),dtype=np.float32); w=rng.standard_normal((C,C,3,3),dtype=np.float32)
            for _ in range(2):
                cconv.conv2d(x,w,None,1,1)
            e=cconv.explain("conv2d",x,w,None,1,1)['forward']
            t=e.get('timings_us',{})
            if 'winograd' in t:
                others=min(v for k,v in t.items() if k!='winograd')
                print(f"C{C} H{H} N{N} tiles {tiles:3d} wino/best-other {t['winograd']/others:.2f}  {t}")
